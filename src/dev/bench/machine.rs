//! The machine a run was measured on, as the report states it.

use crate::error::Result;
use crate::stack::StackConfig;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub ram_gib: f64,
    pub kernel: String,
    pub postgres: String,
    pub kafka: String,
}

impl Machine {
    pub async fn read(admin_url: &str, stack: &StackConfig) -> Result<Self> {
        let client = crate::db::connect(admin_url).await?;
        let postgres: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Ok(Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
                .unwrap_or_else(|| "unknown CPU".into()),
            ram_gib: ram_kb / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            postgres: postgres
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string(),
            kafka: stack.kafka_version.clone(),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB RAM, Linux {}, PostgreSQL {}, Kafka {}",
            self.cores, self.cpu, self.ram_gib, self.kernel, self.postgres, self.kafka
        )
    }
}
