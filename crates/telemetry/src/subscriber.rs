//! The process-wide subscriber, the OTLP pipeline and the guard that shuts it down.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::thread::JoinHandle;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Default filter of the OpenTelemetry layer: `info` and above, without the spans of the
/// gRPC stack that the exporter itself runs on.
const OTEL_FILTER_DEFAULT: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
                                   opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Set once [`init`] has installed the global subscriber; also serialises concurrent calls.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Why [`init`] or [`TelemetryGuard::shutdown`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` or `OVATION_OTEL_FILTER` is not a valid filter.
    #[error("invalid {var} filter {value:?}: {message}")]
    Filter {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The OTLP exporter could not be built (bad endpoint, headers, timeout, ...).
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The exporter's runtime or thread could not be started.
    #[error("cannot start the OTLP exporter thread: {0}")]
    Runtime(#[from] std::io::Error),
    /// Flushing or shutting down the tracer provider failed (e.g. the collector did not answer
    /// within the SDK's timeout); spans may have been lost.
    #[error("cannot flush the tracer provider: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
    /// A telemetry thread panicked.
    #[error("the telemetry {0} thread panicked")]
    Panicked(&'static str),
}

/// Sets the global OpenTelemetry text-map propagator to W3C TraceContext.
///
/// [`init`] calls this; call it directly only where the global subscriber is not installed
/// by [`init`] (tests with scoped subscribers). Idempotent.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
}

/// Installs the global `tracing` subscriber and, when configured, the OTLP span exporter.
///
/// See the crate documentation for what is installed and which environment variables count.
/// Only the first successful call in a process installs anything; later calls (and calls made
/// after another library installed a global subscriber) return a guard that does nothing.
/// Need not be called inside a Tokio runtime.
///
/// # Errors
///
/// [`TelemetryError::Filter`] for an invalid `RUST_LOG` / `OVATION_OTEL_FILTER`,
/// [`TelemetryError::Exporter`] for an invalid OTLP configuration (e.g. a malformed or
/// `https://` endpoint), [`TelemetryError::Runtime`] if the exporter thread cannot start.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    install_propagator();

    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *installed || tracing::dispatcher::has_been_set() {
        return Ok(TelemetryGuard::noop());
    }

    let fmt_filter = filter_from_env("RUST_LOG", "info")?;
    let otel_filter = filter_from_env("OVATION_OTEL_FILTER", OTEL_FILTER_DEFAULT)?;

    let pipeline = Pipeline::start(service_name)?;
    let tracer = pipeline.provider.tracer("ovation-telemetry");

    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(fmt_filter);
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(otel_filter);

    let result = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    *installed = true;
    drop(installed);
    opentelemetry::global::set_tracer_provider(pipeline.provider.clone());
    if let Err(error) = result {
        // `try_init` sets the global subscriber first and then bridges the `log` crate; it
        // fails when a `log` logger is already installed (our subscriber is in place then),
        // or, in a race we cannot rule out, when another global subscriber won.
        tracing::warn!(%error, "telemetry: global subscriber or log bridge not installed");
    }
    Ok(TelemetryGuard {
        pipeline: Some(pipeline),
    })
}

fn filter_from_env(var: &'static str, default: &str) -> Result<EnvFilter, TelemetryError> {
    let value = match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => value,
        Ok(_) | Err(std::env::VarError::NotPresent) => default.to_owned(),
        Err(std::env::VarError::NotUnicode(value)) => {
            return Err(TelemetryError::Filter {
                var,
                value: value.to_string_lossy().into_owned(),
                message: "not valid UTF-8".to_owned(),
            });
        }
    };
    EnvFilter::builder()
        .parse(&value)
        .map_err(|error| TelemetryError::Filter {
            var,
            message: error.to_string(),
            value,
        })
}

fn env_is(var: &str, expected: &str) -> bool {
    std::env::var(var).is_ok_and(|value| value.trim().eq_ignore_ascii_case(expected))
}

fn env_is_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|value| !value.trim().is_empty())
}

/// Whether spans are exported: an OTLP endpoint is configured and export is not disabled.
fn export_enabled() -> bool {
    (env_is_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_is_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !env_is("OTEL_SDK_DISABLED", "true")
        && !env_is("OTEL_TRACES_EXPORTER", "none")
}

/// The tracer provider and, when exporting, the thread that runs the exporter's runtime.
struct Pipeline {
    provider: SdkTracerProvider,
    exporter_runtime: Option<ExporterRuntime>,
}

struct ExporterRuntime {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Pipeline {
    fn start(service_name: &str) -> Result<Self, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        if !export_enabled() {
            // No span processor: spans still get ids and parents (so trace context is
            // propagated), but go nowhere when they end.
            return Ok(Self {
                provider: builder.build(),
                exporter_runtime: None,
            });
        }
        let (exporter, exporter_runtime) = start_exporter()?;
        Ok(Self {
            provider: builder.with_batch_exporter(exporter).build(),
            exporter_runtime: Some(exporter_runtime),
        })
    }

    /// Shuts down the provider (which exports the spans still buffered, within the SDK's
    /// 5 s shutdown timeout), then stops the exporter's runtime. Blocks.
    fn shutdown(self) -> Result<(), TelemetryError> {
        let shut_down = self.provider.shutdown();
        if let Some(runtime) = self.exporter_runtime {
            let _ = runtime.stop.send(());
            runtime
                .thread
                .join()
                .map_err(|_| TelemetryError::Panicked("OTLP exporter"))?;
        }
        shut_down?;
        Ok(())
    }
}

/// Builds the OTLP/gRPC exporter on a dedicated current-thread Tokio runtime.
///
/// tonic's channel spawns its connection tasks on the runtime current at build time, and the
/// SDK's batch processor exports from its own thread, blocking on the export. Were the tasks
/// on the application's runtime, a flush called from (or while blocking) that runtime's only
/// thread would wait forever; on their own runtime, nothing the application does can starve
/// them. The runtime is built and dropped on its own thread, never inside an async context.
fn start_exporter() -> Result<(opentelemetry_otlp::SpanExporter, ExporterRuntime), TelemetryError> {
    let (built_tx, built_rx) = std::sync::mpsc::sync_channel(1);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ovation-otlp".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = built_tx.send(Err(TelemetryError::Runtime(error)));
                    return;
                }
            };
            let exporter = {
                let _context = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .build()
            };
            let failed = exporter.is_err();
            let _ = built_tx.send(exporter.map_err(TelemetryError::Exporter));
            if !failed {
                // Drives the channel's tasks until the guard stops us (or is dropped).
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            }
        })?;
    match built_rx.recv() {
        Ok(Ok(exporter)) => Ok((exporter, ExporterRuntime { stop, thread })),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => {
            let _ = thread.join();
            Err(TelemetryError::Panicked("OTLP exporter"))
        }
    }
}

/// Keeps the telemetry pipeline of [`init`] alive; flushes and shuts it down when dropped.
///
/// Shutting down runs on a separate thread that the dropping thread joins, so it works from
/// anywhere, including inside an async task on a current-thread runtime: it blocks the caller
/// until buffered spans are exported or the SDK's shutdown timeout passes, and never
/// deadlocks. The guard returned by a second [`init`] does nothing.
#[must_use = "dropping the guard shuts telemetry down"]
#[derive(Default)]
pub struct TelemetryGuard {
    pipeline: Option<Pipeline>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("active", &self.is_active())
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

impl TelemetryGuard {
    fn noop() -> Self {
        Self { pipeline: None }
    }

    /// Whether this guard owns the process's pipeline (false for the guard of a repeated
    /// [`init`]).
    pub fn is_active(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Whether spans are exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_some_and(|pipeline| pipeline.exporter_runtime.is_some())
    }

    /// Flushes buffered spans and shuts the pipeline down, reporting failures that dropping
    /// the guard would only log. Blocks like dropping does. Spans created afterwards are no
    /// longer exported (the `fmt` layer keeps logging).
    ///
    /// # Errors
    ///
    /// [`TelemetryError::Shutdown`] when spans could not be flushed (for example the
    /// collector did not answer within the SDK's timeout).
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_off_thread()
    }

    fn shutdown_off_thread(&mut self) -> Result<(), TelemetryError> {
        let Some(pipeline) = self.pipeline.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("ovation-otel-shutdown".to_owned())
            .spawn(move || pipeline.shutdown())?
            .join()
            .map_err(|_| TelemetryError::Panicked("telemetry shutdown"))?
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown_off_thread() {
            tracing::warn!(%error, "telemetry shutdown failed; some spans may be lost");
        }
    }
}
