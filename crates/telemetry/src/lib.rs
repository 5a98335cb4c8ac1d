//! Tracing, OTLP export and W3C trace-context propagation for Ovation's gRPC services.
//!
//! # Layout
//!
//! - [`init`] (module `subscriber`): installs the process-wide `tracing` subscriber once and
//!   returns a [`TelemetryGuard`] that flushes and shuts the exporter down when dropped.
//!   - a `fmt` layer writing to **stderr**, filtered by `RUST_LOG` (default `info`);
//!   - an OpenTelemetry layer (`tracing-opentelemetry`). It is always installed so that trace
//!     ids are created and propagated even when nothing is exported. Spans are **exported** over
//!     OTLP/gRPC (tonic) with a batch span processor only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!     `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED=true` or
//!     `OTEL_TRACES_EXPORTER=none`. The `service.name` resource attribute is the name given to
//!     [`init`]; `OTEL_RESOURCE_ATTRIBUTES` adds further attributes, and the other standard
//!     `OTEL_EXPORTER_OTLP_*` / `OTEL_BSP_*` variables (headers, timeout, compression, batch
//!     sizes) are honoured by the SDK itself.
//!   - the global text-map propagator is set to W3C TraceContext (`traceparent`/`tracestate`).
//! - [`RpcSpanLayer`] (module `layer`): a `tower` layer for tonic servers that opens one `rpc`
//!   span per call, parented on the caller's W3C context, and records the gRPC status.
//! - [`inject_trace_context`] and the [`TracePropagation`] interceptor (module `propagation`):
//!   put the current span's context into outgoing gRPC metadata.
//!
//! # One process, several services
//!
//! OpenTelemetry has one resource (so one `service.name`) per tracer provider, and the tracing
//! subscriber is global, so [`init`] takes effect once per process: a second call (tests that
//! start several services, or `ovation up`, which runs all four services in one process) returns
//! a guard that does nothing. `ovation up` therefore calls `init("ovation")`: the exported
//! `service.name` is the process's name, and every RPC span says which service handled it in its
//! `ovation.service` attribute (the label given to [`RpcSpanLayer::new`]). Run the services as
//! separate processes to get one `service.name` each.
//!
//! # Span fields
//!
//! Each RPC span is named `rpc` in `tracing` and `<package.Service>/<Method>` in OpenTelemetry
//! (`otel.name`), has kind `server`, and carries `rpc.system = "grpc"`, `rpc.service`,
//! `rpc.method`, `ovation.service` and, once the response head is known,
//! `rpc.grpc.status_code` (or `http.response.status_code`, see below). Server-side failures
//! (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) also set the
//! span's OpenTelemetry status to error, as the gRPC semantic conventions ask. Request and
//! response bodies and metadata other than the trace context are never recorded.
//!
//! # Limits
//!
//! - The RPC span ends when the response **head** is ready. A status carried in the response
//!   head (tonic's "trailers-only" responses, which is how every `Err(Status)` from a unary
//!   handler is sent) is recorded as `rpc.grpc.status_code`; a status sent in trailers after a
//!   body (every successful unary call, streams) is not seen, and the span records
//!   `http.response.status_code` instead. The time spent streaming a response body is not
//!   part of the span.
//! - Outgoing calls do not get a client span of their own: [`TracePropagation`] injects the
//!   *current* span (typically the caller's `rpc` span), so the callee's `rpc` span is its
//!   direct child.
//! - Export goes over plaintext HTTP/2 (`http://host:4317`): no TLS feature of
//!   `opentelemetry-otlp` is enabled, so an `https://` endpoint makes [`init`] fail.
//! - The OTLP exporter runs on a small dedicated Tokio runtime (one thread named `ovation-otlp`)
//!   owned by the guard, so [`init`] does not need to be called inside a runtime and flushing
//!   never waits on the application's runtime. Dropping the guard blocks the dropping thread
//!   until buffered spans are exported or the SDK's shutdown timeout (5 s) passes; it never
//!   deadlocks, even on a current-thread runtime. Spans still buffered when the process exits
//!   without dropping the guard (e.g. `std::process::exit`) are lost.
//! - The OpenTelemetry layer keeps spans at `info` and above and drops the spans of the gRPC
//!   stack itself (`h2`, `hyper`, `tonic`, `tower`, `opentelemetry*`), so that exporting does
//!   not trace its own exports. Set `OVATION_OTEL_FILTER` (an `EnvFilter` directive string) to
//!   change that; it is separate from `RUST_LOG` so quieter logs do not lose traces.
//! - Queue bounds are the SDK's: at most `OTEL_BSP_MAX_QUEUE_SIZE` (default 2048) spans are
//!   buffered; beyond that spans are dropped, never queued without bound.

mod layer;
mod propagation;
mod subscriber;

pub use layer::{RpcSpanFuture, RpcSpanLayer, RpcSpanService};
pub use propagation::{
    TracePropagation, continue_trace, current_traceparent, extract_trace_context,
    inject_trace_context,
};
pub use subscriber::{TelemetryError, TelemetryGuard, init, install_propagator};
