//! Facts from sysfs and device nodes: the kernel release, the loaded KVM modules and their
//! confidential-computing parameters, `/dev/sev`.

use serde::Serialize;

use super::Feature;
use super::cpu::CpuFacts;

/// The running kernel's release (`/proc/sys/kernel/osrelease`), or `unknown`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The `(major, minor)` of a kernel release such as `6.18.44-fc`; `None` if it does not parse.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The reason for a missing kernel feature that appeared in Linux `min`: "kernel X is older
/// than min" when it is, else `otherwise` (the kernel is new enough, so it was configured out).
pub fn kernel_reason(version: Option<(u32, u32)>, min: (u32, u32), otherwise: &str) -> String {
    match version {
        Some(v) if v < min => format!("kernel {}.{} is older than {}.{}", v.0, v.1, min.0, min.1),
        Some(_) => otherwise.to_string(),
        None => format!("kernel older than {}.{}, or {otherwise}", min.0, min.1),
    }
}

/// The loaded KVM modules (`kvm` and its vendor modules such as `kvm_amd`), sorted.
pub fn kvm_modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n == "kvm" || n.starts_with("kvm_"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The vendor modules among `modules` (everything but `kvm` itself), for reasons.
fn vendor_modules(modules: &[String]) -> String {
    let vendors: Vec<&str> = modules
        .iter()
        .map(String::as_str)
        .filter(|m| *m != "kvm")
        .collect();
    if vendors.is_empty() {
        "no KVM vendor module is loaded".to_string()
    } else {
        format!("KVM here is provided by {}", vendors.join(", "))
    }
}

/// A module parameter read from `/sys/module/<module>/parameters/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    ModuleNotLoaded,
    NoSuchParameter,
    Value(String),
}

fn module_param(module: &str, name: &str) -> Param {
    if !std::path::Path::new("/sys/module").join(module).is_dir() {
        return Param::ModuleNotLoaded;
    }
    let path = format!("/sys/module/{module}/parameters/{name}");
    match std::fs::read_to_string(&path) {
        Ok(v) => Param::Value(v.trim().to_string()),
        Err(_) => Param::NoSuchParameter,
    }
}

/// Whether a boolean module parameter's text means enabled (`Y` or `1`).
fn param_enabled(value: &str) -> bool {
    matches!(value, "Y" | "y" | "1")
}

/// A boolean parameter of a vendor module as a [`Feature`], with the reason when it is off.
fn vendor_param(
    module: &str,
    name: &str,
    modules: &[String],
    missing_param: &str,
    disabled: &str,
) -> Feature {
    match module_param(module, name) {
        Param::ModuleNotLoaded => Feature::absent(format!(
            "{module} is not loaded ({})",
            vendor_modules(modules)
        )),
        Param::NoSuchParameter => Feature::absent(format!(
            "{module} has no `{name}` parameter ({missing_param})"
        )),
        Param::Value(v) if param_enabled(&v) => {
            Feature::present(format!("/sys/module/{module}/parameters/{name} = {v}"))
        }
        Param::Value(v) => Feature::absent(format!(
            "/sys/module/{module}/parameters/{name} = {v}: {disabled}"
        )),
    }
}

/// Opens a device node read-write and closes it again.
pub(super) fn open_test(path: &str) -> Feature {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Feature::present(format!("{path} opens read-write")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Feature::absent(format!("{path} does not exist"))
        }
        Err(e) => Feature::absent(format!("{path} exists but cannot be opened: {e}")),
    }
}

/// AMD SEV host support: the kvm_amd parameters and `/dev/sev`.
#[derive(Debug, Clone, Serialize)]
pub struct SevFacts {
    /// `/dev/sev` (the PSP driver, `ccp`): needed for every SEV launch command.
    pub dev_sev: Feature,
    /// `kvm_amd.sev`.
    pub sev: Feature,
    /// `kvm_amd.sev_es`.
    pub sev_es: Feature,
    /// `kvm_amd.sev_snp`: SNP enabled by firmware, kernel and KVM.
    pub sev_snp: Feature,
}

impl SevFacts {
    /// Reads the kvm_amd parameters and opens `/dev/sev`.
    pub fn probe(cpu: &CpuFacts, modules: &[String], kernel: Option<(u32, u32)>) -> Self {
        let not_amd = (!cpu.is_amd()).then(|| {
            Feature::absent(format!(
                "not an AMD CPU (vendor `{}`): SEV is AMD only",
                cpu.vendor
            ))
        });
        let mut dev_sev = open_test("/dev/sev");
        if !dev_sev.available && dev_sev.detail.ends_with("does not exist") {
            dev_sev.detail.push_str(
                " (no AMD PSP/CCP driver for SEV: not an SEV-capable host, \
                 SEV disabled in firmware, or the ccp module is not loaded)",
            );
        }
        let snp_off = if cpu.has("sev_snp") {
            "SNP is not enabled (kernel command line, or SNP firmware not initialized)".to_string()
        } else {
            "SNP is not enabled, and the CPU does not list the sev_snp flag \
             (not enabled in firmware/BIOS, or not supported by this CPU)"
                .to_string()
        };
        let param = |name: &str, old: &str, off: &str| {
            not_amd
                .clone()
                .unwrap_or_else(|| vendor_param("kvm_amd", name, modules, old, off))
        };
        SevFacts {
            dev_sev: not_amd.clone().unwrap_or(dev_sev),
            sev: param(
                "sev",
                "kernel built without SEV support",
                "SEV not enabled in firmware or by the kernel",
            ),
            sev_es: param(
                "sev_es",
                "kernel built without SEV-ES support",
                "SEV-ES not enabled in firmware or by the kernel",
            ),
            sev_snp: param(
                "sev_snp",
                &kernel_reason(kernel, (6, 11), "kernel built without SEV-SNP host support"),
                &snp_off,
            ),
        }
    }
}

/// Intel TDX host support: the kvm_intel `tdx` parameter.
#[derive(Debug, Clone, Serialize)]
pub struct TdxFacts {
    /// `kvm_intel.tdx`: TDX module initialized and KVM's TDX support on.
    pub kvm_intel_tdx: Feature,
}

impl TdxFacts {
    /// Reads `/sys/module/kvm_intel/parameters/tdx`.
    pub fn probe(cpu: &CpuFacts, modules: &[String], kernel: Option<(u32, u32)>) -> Self {
        let kvm_intel_tdx = if !cpu.is_intel() {
            Feature::absent(format!(
                "not an Intel CPU (vendor `{}`): TDX is Intel only",
                cpu.vendor
            ))
        } else {
            vendor_param(
                "kvm_intel",
                "tdx",
                modules,
                &kernel_reason(kernel, (6, 16), "kernel built without CONFIG_KVM_INTEL_TDX"),
                "TDX is not enabled (kvm_intel.tdx=1 on the kernel command line, TDX enabled \
                 in BIOS, and the TDX module loaded are all needed)",
            )
        };
        TdxFacts { kvm_intel_tdx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_and_reasons() {
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(kernel_version("5.4"), Some((5, 4)));
        assert_eq!(kernel_version("unknown"), None);
        assert_eq!(
            kernel_reason(Some((6, 1)), (6, 8), "x"),
            "kernel 6.1 is older than 6.8"
        );
        assert_eq!(
            kernel_reason(Some((6, 18)), (6, 8), "configured out"),
            "configured out"
        );
    }

    #[test]
    fn param_text() {
        assert!(param_enabled("Y") && param_enabled("1"));
        assert!(!param_enabled("N") && !param_enabled("0"));
    }

    #[test]
    fn absent_vendor_module_names_the_one_present() {
        let f = vendor_param(
            "kvm_no_such_vendor",
            "x",
            &["kvm".into(), "kvm_pvm".into()],
            "",
            "",
        );
        assert!(!f.available);
        assert_eq!(
            f.detail,
            "kvm_no_such_vendor is not loaded (KVM here is provided by kvm_pvm)"
        );
    }

    #[test]
    fn missing_device_node_is_absent_with_reason() {
        let f = open_test("/dev/veil-no-such-device");
        assert_eq!(
            f,
            Feature::absent("/dev/veil-no-such-device does not exist")
        );
    }
}
