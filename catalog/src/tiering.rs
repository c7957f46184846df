//! Storage tiering as policy data: the S3 storage classes and an ordered list of
//! steps, `{ older_than = "30d", storage_class = "STANDARD_IA" }`, then colder ones.
//!
//! A partition older than a step's `older_than` belongs in that step's class (the last
//! step it is old enough for). Steps must get older and colder as they go. Classes a
//! plain GET cannot read (`GLACIER`, `DEEP_ARCHIVE`) are never a default: they take a
//! step that names them.
//!
//! ```
//! use sediment_catalog::tiering::{StorageClass, TierSteps};
//! let steps = TierSteps::parse("30d:STANDARD_IA,180d:GLACIER_IR").unwrap();
//! let day = std::time::Duration::from_secs(86_400);
//! assert_eq!(steps.class_for(10 * day), None);
//! assert_eq!(steps.class_for(40 * day), Some(StorageClass::StandardIa));
//! assert_eq!(steps.class_for(400 * day), Some(StorageClass::GlacierIr));
//! assert!(TierSteps::parse("180d:GLACIER_IR,30d:STANDARD_IA").is_err());
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CatalogError, Result};

/// An S3 storage class, from hot to cold (the order of the variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StorageClass {
    Standard,
    IntelligentTiering,
    StandardIa,
    OnezoneIa,
    /// Glacier Instant Retrieval: millisecond reads, 90-day minimum.
    GlacierIr,
    /// Glacier Flexible Retrieval: a GET fails until a restore completes.
    Glacier,
    /// A GET fails until a restore completes (hours).
    DeepArchive,
}

impl StorageClass {
    /// Every class, hot to cold.
    pub const ALL: [StorageClass; 7] = [
        StorageClass::Standard,
        StorageClass::IntelligentTiering,
        StorageClass::StandardIa,
        StorageClass::OnezoneIa,
        StorageClass::GlacierIr,
        StorageClass::Glacier,
        StorageClass::DeepArchive,
    ];

    /// The name S3 uses (`x-amz-storage-class`).
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
        }
    }

    /// How cold: 0 hot (STANDARD, INTELLIGENT_TIERING), 1 infrequent access, 2
    /// instant-retrieval archive, 3 and 4 archives that need a restore.
    pub fn coldness(self) -> u8 {
        match self {
            StorageClass::Standard | StorageClass::IntelligentTiering => 0,
            StorageClass::StandardIa | StorageClass::OnezoneIa => 1,
            StorageClass::GlacierIr => 2,
            StorageClass::Glacier => 3,
            StorageClass::DeepArchive => 4,
        }
    }

    /// Whether a plain GET fails until the object is restored.
    pub fn needs_restore(self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }

    /// Whether the compactor leaves its files alone unless asked (infrequent access
    /// and colder: rewriting them pays retrieval and early-deletion charges).
    pub fn is_cold(self) -> bool {
        self.coldness() >= 1
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageClass {
    type Err = CatalogError;

    /// S3's name, in any case, with `-` or `_`.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        StorageClass::ALL.into_iter().find(|c| c.as_str() == wanted).ok_or_else(|| {
            let names: Vec<&str> = StorageClass::ALL.iter().map(|c| c.as_str()).collect();
            CatalogError::invalid(format!("unknown storage class {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

impl Serialize for StorageClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StorageClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One step: data older than `older_than` goes to `storage_class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierStep {
    #[serde(with = "humantime_serde")]
    pub older_than: Duration,
    pub storage_class: StorageClass,
}

/// The steps of a tiering policy, older and colder as they go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TierSteps(pub Vec<TierStep>);

impl TierSteps {
    /// `30d:STANDARD_IA,180d:GLACIER_IR` (the CLI's `--policy`), validated.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut steps = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (age, class) = part.split_once(':').ok_or_else(|| {
                CatalogError::invalid(format!("tiering step {part:?}: expected AGE:CLASS, e.g. 30d:STANDARD_IA"))
            })?;
            let older_than = humantime::parse_duration(age.trim()).map_err(|e| {
                CatalogError::invalid(format!("tiering step {part:?}: age {age:?} is not a duration (e.g. 30d): {e}"))
            })?;
            let storage_class = class
                .parse()
                .map_err(|e: CatalogError| CatalogError::invalid(format!("tiering step {part:?}: {e}")))?;
            steps.push(TierStep { older_than, storage_class });
        }
        let steps = TierSteps(steps);
        steps.validate("tiering")?;
        Ok(steps)
    }

    /// Refuse steps that are not older and colder as they go, naming `field`.
    pub fn validate(&self, field: &str) -> Result<()> {
        for (i, step) in self.0.iter().enumerate() {
            if step.older_than.is_zero() {
                return Err(CatalogError::invalid(format!("{field}.steps[{i}].older_than: above zero")));
            }
            if step.storage_class.coldness() == 0 {
                return Err(CatalogError::invalid(format!(
                    "{field}.steps[{i}].storage_class: {} is a hot class; a step moves data to a colder one \
                     (STANDARD_IA, ONEZONE_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE)",
                    step.storage_class
                )));
            }
            if let Some(prev) = i.checked_sub(1).map(|p| &self.0[p]) {
                if step.older_than <= prev.older_than {
                    return Err(CatalogError::invalid(format!(
                        "{field}.steps[{i}].older_than: steps must get older as they go ({} after {})",
                        humantime::format_duration(step.older_than),
                        humantime::format_duration(prev.older_than)
                    )));
                }
                if step.storage_class.coldness() <= prev.storage_class.coldness() {
                    return Err(CatalogError::invalid(format!(
                        "{field}.steps[{i}].storage_class: steps must get colder as they go ({} after {})",
                        step.storage_class, prev.storage_class
                    )));
                }
            }
        }
        Ok(())
    }

    /// The class data of `age` belongs in; `None`: it stays where it is.
    pub fn class_for(&self, age: Duration) -> Option<StorageClass> {
        self.0.iter().rev().find(|s| age >= s.older_than).map(|s| s.storage_class)
    }

    /// Whether no step is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Storage prices in USD per GB-month (GB = 2^30 bytes, as S3 bills), per class.
/// Defaults: S3's us-east-1 list prices (December 2026). A deployment elsewhere sets
/// its region's in the settings (`[storage_prices]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct StoragePrices {
    pub standard: f64,
    pub intelligent_tiering: f64,
    pub standard_ia: f64,
    pub onezone_ia: f64,
    pub glacier_ir: f64,
    pub glacier: f64,
    pub deep_archive: f64,
}

impl Default for StoragePrices {
    fn default() -> Self {
        Self {
            standard: 0.023,
            // Its frequent-access tier (objects below 128 KB always stay there).
            intelligent_tiering: 0.023,
            standard_ia: 0.0125,
            onezone_ia: 0.01,
            glacier_ir: 0.004,
            glacier: 0.0036,
            deep_archive: 0.00099,
        }
    }
}

/// Objects smaller than this are billed as this large in the infrequent-access and
/// instant-retrieval classes.
pub const MIN_BILLED_OBJECT: u64 = 128 * 1024;
/// What S3 adds to every GLACIER and DEEP_ARCHIVE object: 32 KB at the class's price
/// (its index) and 8 KB at STANDARD's (its name and metadata).
pub const ARCHIVE_OVERHEAD: (u64, u64) = (32 * 1024, 8 * 1024);

impl StoragePrices {
    /// The price of `class`, USD per GB-month.
    pub fn of(&self, class: StorageClass) -> f64 {
        match class {
            StorageClass::Standard => self.standard,
            StorageClass::IntelligentTiering => self.intelligent_tiering,
            StorageClass::StandardIa => self.standard_ia,
            StorageClass::OnezoneIa => self.onezone_ia,
            StorageClass::GlacierIr => self.glacier_ir,
            StorageClass::Glacier => self.glacier,
            StorageClass::DeepArchive => self.deep_archive,
        }
    }

    /// The monthly cost in USD of one object of `size` bytes in `class`, with S3's
    /// minimum billed size and archive overheads.
    pub fn object_month(&self, class: StorageClass, size: u64) -> f64 {
        const GB: f64 = (1u64 << 30) as f64;
        match class {
            StorageClass::StandardIa | StorageClass::OnezoneIa | StorageClass::GlacierIr => {
                size.max(MIN_BILLED_OBJECT) as f64 / GB * self.of(class)
            }
            StorageClass::Glacier | StorageClass::DeepArchive => {
                (size + ARCHIVE_OVERHEAD.0) as f64 / GB * self.of(class)
                    + ARCHIVE_OVERHEAD.1 as f64 / GB * self.standard
            }
            _ => size as f64 / GB * self.of(class),
        }
    }

    /// Refuse a negative or not-a-number price, naming it.
    pub fn validate(&self, field: &str) -> Result<()> {
        for class in StorageClass::ALL {
            let price = self.of(class);
            if !price.is_finite() || price < 0.0 {
                return Err(CatalogError::invalid(format!(
                    "{field}.{}: a price in USD per GB-month, zero or more, got {price}",
                    class.as_str().to_ascii_lowercase()
                )));
            }
        }
        Ok(())
    }
}

/// The CLI form, `30d:STANDARD_IA,180d:GLACIER_IR` ([`TierSteps::parse`] reads it back).
impl fmt::Display for TierSteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let secs = step.older_than.as_secs();
            match (secs % 86_400, secs % 3_600, step.older_than.subsec_nanos()) {
                (0, _, 0) => write!(f, "{}d", secs / 86_400)?,
                (_, 0, 0) => write!(f, "{}h", secs / 3_600)?,
                _ => write!(f, "{}", humantime::format_duration(step.older_than).to_string().replace(' ', ""))?,
            }
            write!(f, ":{}", step.storage_class)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_are_billed_at_the_minimum_and_archives_pay_their_overhead() {
        let p = StoragePrices::default();
        let gb = (1u64 << 30) as f64;
        assert!((p.object_month(StorageClass::Standard, 1 << 30) - 0.023).abs() < 1e-12);
        // A 10 KB file costs as much as a 128 KB one in STANDARD_IA.
        assert_eq!(
            p.object_month(StorageClass::StandardIa, 10 * 1024),
            p.object_month(StorageClass::StandardIa, 128 * 1024)
        );
        let deep = p.object_month(StorageClass::DeepArchive, 0);
        assert!((deep - (32.0 * 1024.0 / gb * 0.00099 + 8.0 * 1024.0 / gb * 0.023)).abs() < 1e-15);
        let bad = StoragePrices { glacier: -1.0, ..Default::default() };
        assert!(bad.validate("storage_prices").unwrap_err().to_string().contains("storage_prices.glacier"));
    }

    #[test]
    fn steps_print_as_they_parse() {
        let steps = TierSteps::parse("30d:STANDARD_IA, 180d:glacier_ir").unwrap();
        assert_eq!(steps.to_string(), "30d:STANDARD_IA,180d:GLACIER_IR");
        let odd = TierSteps::parse("36h:STANDARD_IA,2d 30m:GLACIER_IR").unwrap();
        assert_eq!(odd.to_string(), "36h:STANDARD_IA,2days30m:GLACIER_IR");
        assert_eq!(TierSteps::parse(&odd.to_string()).unwrap(), odd);
        assert_eq!(TierSteps::parse(&steps.to_string()).unwrap(), steps);
    }

    #[test]
    fn classes_parse_in_any_case_and_refuse_unknown_names() {
        assert_eq!("standard_ia".parse::<StorageClass>().unwrap(), StorageClass::StandardIa);
        assert_eq!("Glacier-IR".parse::<StorageClass>().unwrap(), StorageClass::GlacierIr);
        let err = "COLD".parse::<StorageClass>().unwrap_err().to_string();
        assert!(err.contains("COLD") && err.contains("DEEP_ARCHIVE"), "{err}");
        assert!(StorageClass::Glacier.needs_restore() && !StorageClass::GlacierIr.needs_restore());
    }

    #[test]
    fn steps_must_get_older_and_colder() {
        let err = |spec: &str| TierSteps::parse(spec).unwrap_err().to_string();
        assert!(err("30d:STANDARD_IA,20d:GLACIER_IR").contains("older"));
        assert!(err("30d:GLACIER_IR,90d:STANDARD_IA").contains("colder"));
        assert!(err("30d:STANDARD").contains("hot class"));
        assert!(err("thirty:STANDARD_IA").contains("duration"));
        assert!(err("30d").contains("AGE:CLASS"));
        assert!(err("30d:TAPE").contains("TAPE"));
        let steps = TierSteps::parse("30d:STANDARD_IA, 90d:GLACIER_IR, 365d:DEEP_ARCHIVE").unwrap();
        assert_eq!(steps.0.len(), 3);
        let json = serde_json::to_value(&steps).unwrap();
        assert_eq!(json[2]["storage_class"], "DEEP_ARCHIVE");
        let back: TierSteps = serde_json::from_value(json).unwrap();
        assert_eq!(back, steps);
    }
}
