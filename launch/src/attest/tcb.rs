//! SEV-SNP TCB versions: the packed 64-bit value in reports and VCEKs, its per-product layout,
//! and the `--min-tcb` syntax.

use std::fmt;

/// Errors from reading a TCB value written by a user.
#[derive(Debug, thiserror::Error)]
pub enum TcbError {
    /// A `name=value` item names no TCB component.
    #[error("unknown TCB component {0:?} (expected bl, tee, snp, ucode or fmc)")]
    UnknownComponent(String),
    /// A component value is not a number from 0 to 255.
    #[error("TCB component {name}: {value:?} is not a number from 0 to 255")]
    BadValue {
        /// The component.
        name: String,
        /// What was given.
        value: String,
    },
    /// An item is not `name=value`, or the raw form is not 16 hex digits.
    #[error(
        "TCB {0:?} is neither `bl=N,tee=N,snp=N,ucode=N[,fmc=N]` nor 16 hex digits of the raw value"
    )]
    Syntax(String),
}

/// How a product packs the TCB components into 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TcbLayout {
    /// Milan and Genoa: bl @0, tee @1, snp @6, microcode @7.
    MilanGenoa,
    /// Turin: fmc @0, bl @1, tee @2, snp @3, microcode @7.
    Turin,
}

/// The security patch levels of the firmware components a VCEK is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Tcb {
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin and later; `None` on Milan and Genoa).
    pub fmc: Option<u8>,
}

impl Tcb {
    /// Unpacks the raw little-endian value stored in a report.
    pub fn from_raw(raw: u64, layout: TcbLayout) -> Self {
        let b = raw.to_le_bytes();
        match layout {
            TcbLayout::MilanGenoa => Tcb {
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
                fmc: None,
            },
            TcbLayout::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// Packs the components into the raw value a report carries.
    pub fn to_raw(self, layout: TcbLayout) -> u64 {
        let mut b = [0u8; 8];
        match layout {
            TcbLayout::MilanGenoa => {
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            TcbLayout::Turin => {
                b[0] = self.fmc.unwrap_or(0);
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        u64::from_le_bytes(b)
    }

    /// Names of the components of `self` that are below those of `min` (empty: `self >= min`).
    pub fn below(&self, min: &Tcb) -> Vec<&'static str> {
        let mut low = Vec::new();
        if self.bootloader < min.bootloader {
            low.push("bl");
        }
        if self.tee < min.tee {
            low.push("tee");
        }
        if self.snp < min.snp {
            low.push("snp");
        }
        if self.microcode < min.microcode {
            low.push("ucode");
        }
        if self.fmc.unwrap_or(0) < min.fmc.unwrap_or(0) {
            low.push("fmc");
        }
        low
    }

    /// Parses `bl=N,tee=N,snp=N,ucode=N[,fmc=N]` (missing components are 0) or 16 hex digits
    /// holding the raw little-endian bytes as a report stores them, unpacked with `layout`.
    pub fn parse(text: &str, layout: TcbLayout) -> Result<Self, TcbError> {
        let text = text.trim();
        if !text.contains('=') {
            let bytes = hex::decode(text).map_err(|_| TcbError::Syntax(text.to_string()))?;
            let raw: [u8; 8] = bytes
                .try_into()
                .map_err(|_| TcbError::Syntax(text.to_string()))?;
            return Ok(Self::from_raw(u64::from_le_bytes(raw), layout));
        }
        let mut tcb = Tcb::default();
        for item in text.split(',') {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| TcbError::Syntax(text.to_string()))?;
            let (name, value) = (name.trim(), value.trim());
            let n = parse_u8(value).ok_or_else(|| TcbError::BadValue {
                name: name.to_string(),
                value: value.to_string(),
            })?;
            match name {
                "bl" | "bootloader" => tcb.bootloader = n,
                "tee" => tcb.tee = n,
                "snp" => tcb.snp = n,
                "ucode" | "microcode" => tcb.microcode = n,
                "fmc" => tcb.fmc = Some(n),
                other => return Err(TcbError::UnknownComponent(other.to_string())),
            }
        }
        Ok(tcb)
    }
}

fn parse_u8(value: &str) -> Option<u8> {
    match value.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16).ok(),
        None => value.parse().ok(),
    }
}

impl fmt::Display for Tcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bl={},tee={},snp={},ucode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )?;
        if let Some(fmc) = self.fmc {
            write!(f, ",fmc={fmc}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milan_raw_round_trip() {
        let raw = u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 0x73]);
        let tcb = Tcb::from_raw(raw, TcbLayout::MilanGenoa);
        assert_eq!(tcb.to_string(), "bl=3,tee=0,snp=8,ucode=115");
        assert_eq!(tcb.to_raw(TcbLayout::MilanGenoa), raw);
        assert_eq!(
            Tcb::parse("0300000000000873", TcbLayout::MilanGenoa).unwrap(),
            tcb
        );
        assert_eq!(
            Tcb::parse("bl=3,tee=0,snp=8,ucode=0x73", TcbLayout::MilanGenoa).unwrap(),
            tcb
        );
    }

    #[test]
    fn turin_layout_places_fmc_first() {
        let tcb = Tcb::from_raw(
            u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 5]),
            TcbLayout::Turin,
        );
        assert_eq!(tcb.to_string(), "bl=2,tee=3,snp=4,ucode=5,fmc=1");
    }

    #[test]
    fn below_names_each_low_component() {
        let have = Tcb::parse("bl=3,tee=0,snp=8,ucode=115", TcbLayout::MilanGenoa).unwrap();
        let min = Tcb::parse("bl=4,snp=9", TcbLayout::MilanGenoa).unwrap();
        assert_eq!(have.below(&min), vec!["bl", "snp"]);
        assert!(have.below(&have).is_empty());
    }

    #[test]
    fn bad_text_is_rejected_with_reason() {
        assert!(matches!(
            Tcb::parse("bl=300", TcbLayout::MilanGenoa),
            Err(TcbError::BadValue { .. })
        ));
        assert!(matches!(
            Tcb::parse("xx=1", TcbLayout::MilanGenoa),
            Err(TcbError::UnknownComponent(_))
        ));
        assert!(matches!(
            Tcb::parse("0300", TcbLayout::MilanGenoa),
            Err(TcbError::Syntax(_))
        ));
    }
}
