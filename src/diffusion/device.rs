//! Which compute device runs the pipelines, and why: `auto` takes a GPU this build supports
//! when one starts, else the CPU, and says what happened ("CUDA is not compiled into this
//! build", "CUDA did not start: …, using the CPU"); asking for a device explicitly fails with
//! the reason instead of falling back. Nothing here is silent.

use std::str::FromStr;

use candle_core::Device;

/// What the user asked for (`--device`, the studio's default is `Auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePreference {
    #[default]
    Auto,
    Cpu,
    Cuda,
    Metal,
}

impl DevicePreference {
    pub const ALL: [DevicePreference; 4] = [
        DevicePreference::Auto,
        DevicePreference::Cpu,
        DevicePreference::Cuda,
        DevicePreference::Metal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DevicePreference::Auto => "auto",
            DevicePreference::Cpu => "cpu",
            DevicePreference::Cuda => "cuda",
            DevicePreference::Metal => "metal",
        }
    }
}

impl FromStr for DevicePreference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown device {s:?}: one of auto, cpu, cuda, metal"))
    }
}

/// The device chosen and how it came to be chosen.
#[derive(Clone, Debug)]
pub struct DeviceChoice {
    pub device: Device,
    /// "CPU, 2 threads", "CUDA GPU 0".
    pub summary: String,
    /// Why it is not the GPU, when `auto` fell back or the build has none.
    pub note: Option<String>,
}

impl DeviceChoice {
    /// One line for a status bar or `atelier models`: the summary and its note.
    pub fn describe(&self) -> String {
        match &self.note {
            Some(note) => format!("{} ({note})", self.summary),
            None => self.summary.clone(),
        }
    }
}

/// The device could not be used as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

fn cpu(note: Option<String>) -> DeviceChoice {
    // The pool candle's kernels run on (`--threads` / RAYON_NUM_THREADS, else every core).
    let threads = candle_core::utils::get_num_threads();
    DeviceChoice {
        device: Device::Cpu,
        summary: format!(
            "CPU, {threads} thread{}",
            if threads == 1 { "" } else { "s" }
        ),
        note,
    }
}

/// Starts the first CUDA device (`Err`: why not, including "not compiled in").
fn cuda() -> Result<DeviceChoice, String> {
    #[cfg(feature = "cuda")]
    {
        Device::new_cuda(0)
            .map(|device| DeviceChoice {
                device,
                summary: "CUDA GPU 0".into(),
                note: None,
            })
            .map_err(|e| format!("CUDA did not start: {}", super::error_text(&e)))
    }
    #[cfg(not(feature = "cuda"))]
    Err("CUDA is not compiled into this build (build with --features cuda)".into())
}

/// Starts the first Metal device (`Err`: why not, including "not compiled in").
fn metal() -> Result<DeviceChoice, String> {
    #[cfg(feature = "metal")]
    {
        Device::new_metal(0)
            .map(|device| DeviceChoice {
                device,
                summary: "Metal GPU 0".into(),
                note: None,
            })
            .map_err(|e| format!("Metal did not start: {}", super::error_text(&e)))
    }
    #[cfg(not(feature = "metal"))]
    Err("Metal is not compiled into this build (build with --features metal)".into())
}

/// Chooses the device for `preference`. `Auto` never fails: it falls back to the CPU and
/// says why in the note.
pub fn choose(preference: DevicePreference) -> Result<DeviceChoice, DeviceError> {
    match preference {
        DevicePreference::Cpu => Ok(cpu(None)),
        DevicePreference::Cuda => cuda().map_err(DeviceError),
        DevicePreference::Metal => metal().map_err(DeviceError),
        DevicePreference::Auto => {
            let compiled = cfg!(feature = "cuda") || cfg!(feature = "metal");
            if !compiled {
                return Ok(cpu(Some("this build has no GPU support".into())));
            }
            let mut why = Vec::new();
            if cfg!(feature = "cuda") {
                match cuda() {
                    Ok(choice) => return Ok(choice),
                    Err(e) => why.push(e),
                }
            }
            if cfg!(feature = "metal") {
                match metal() {
                    Ok(choice) => return Ok(choice),
                    Err(e) => why.push(e),
                }
            }
            Ok(cpu(Some(format!("{}; using the CPU", why.join("; ")))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for d in DevicePreference::ALL {
            assert_eq!(d.name().parse::<DevicePreference>(), Ok(d));
        }
        assert_eq!(
            "CUDA".parse::<DevicePreference>(),
            Ok(DevicePreference::Cuda)
        );
        assert!("tpu"
            .parse::<DevicePreference>()
            .unwrap_err()
            .contains("tpu"));
    }

    #[test]
    fn the_cpu_always_works_and_auto_says_why_it_is_not_a_gpu() {
        let c = choose(DevicePreference::Cpu).unwrap();
        assert!(c.device.is_cpu());
        assert!(c.summary.starts_with("CPU, "));
        let auto = choose(DevicePreference::Auto).unwrap();
        if auto.device.is_cpu() {
            assert!(auto.note.is_some(), "a CPU fallback says why");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn asking_for_cuda_without_it_is_an_error_naming_the_feature() {
        let e = choose(DevicePreference::Cuda).unwrap_err();
        assert!(e.0.contains("not compiled"), "{e}");
        assert!(e.0.contains("--features cuda"), "{e}");
    }
}
