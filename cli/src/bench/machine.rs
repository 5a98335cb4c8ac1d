//! What a report names besides its figures: the machine (cores, CPU model, memory, load
//! average) and the build (version, debug or release, git commit).

use std::fmt::Write as _;

/// The git commit the binary was built from, if `build.rs` could ask git.
const GIT_COMMIT: Option<&str> = option_env!("OVATION_GIT_COMMIT");

/// The machine, as /proc describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub memory_mib: Option<u64>,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo),
            memory_mib: mem_total_kib(&meminfo).map(|kib| kib / 1_024),
        }
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} cores (available_parallelism), {}",
            self.cores,
            self.cpu_model.as_deref().unwrap_or("CPU model unknown")
        );
        if let Some(mib) = self.memory_mib {
            let _ = write!(s, ", {:.1} GiB memory", mib as f64 / 1_024.0);
        }
        let _ = write!(s, ", {} {}", std::env::consts::OS, std::env::consts::ARCH);
        s
    }
}

/// `ovation 0.1.0, release build, commit 1234abc` (or `commit unknown`).
pub fn build() -> String {
    format!(
        "ovation {}, {} build, commit {}",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        GIT_COMMIT.unwrap_or("unknown")
    )
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_load_average(&text)
}

fn parse_load_average(text: &str) -> Option<String> {
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3 && fields.iter().all(|f| f.parse::<f64>().is_ok())).then(|| fields.join(" "))
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cpuinfo_meminfo_and_loadavg_are_read() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\
                       processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model("processor: 0\n"), None);
        let meminfo = "MemTotal:       24683584 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_683_584));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(
            parse_load_average("2.11 1.27 0.55 3/155 14850\n").as_deref(),
            Some("2.11 1.27 0.55")
        );
        assert_eq!(parse_load_average("x"), None);
        assert!(build().starts_with("ovation "), "{}", build());
    }
}
