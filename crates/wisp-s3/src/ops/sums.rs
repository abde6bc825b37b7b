//! Checksums of multipart uploads, as S3 has them: an upload created with
//! `x-amz-checksum-algorithm` has every part's checksum of that algorithm
//! computed (and checked, when the client sent one) and kept; completing
//! it checks the checksums the client lists for its parts and makes the
//! object's, of the upload's type:
//!
//! - `COMPOSITE` (SHA-1, SHA-256; CRC32 and CRC32C by default): the
//!   checksum of the parts' binary checksums joined, then `-N`;
//! - `FULL_OBJECT` (CRC64NVME always; CRC32 and CRC32C when asked): the
//!   checksum of the whole object's bytes, computed as they are joined.
//!
//! The object keeps it (`:x-amz-checksum-<algorithm>`, its type, and the
//! parts' checksums for `GET ?partNumber=N` and GetObjectAttributes).

use crate::error::invalid_request;
use base64::Engine as _;
use s3s::S3Result;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::{Checksum, ChecksumAlgorithm, ChecksumType, CompletedPart};
use std::collections::BTreeMap;
use wisp_objects::{HEADER_PREFIX, ObjectError, ObjectMeta, PART_CHECKSUMS, Part};

/// The stored attribute naming an upload's (and then its object's)
/// checksum algorithm.
pub(super) const ALGORITHM: &str = "x-wisp-checksum-algorithm";
/// The stored attribute naming the checksum's type.
pub(super) const TYPE: &str = "x-amz-checksum-type";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Algo {
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
    Crc64Nvme,
}

impl Algo {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "crc32" => Self::Crc32,
            "crc32c" => Self::Crc32c,
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "crc64nvme" => Self::Crc64Nvme,
            _ => return None,
        })
    }

    /// As in `x-amz-checksum-<name>`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "crc32",
            Self::Crc32c => "crc32c",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Crc64Nvme => "crc64nvme",
        }
    }

    fn upper(self) -> String {
        self.name().to_ascii_uppercase()
    }

    /// A hasher computing this algorithm only.
    pub(super) fn hasher(self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        match self {
            Self::Crc32 => h.crc32 = Some(s3s::crypto::Crc32::new()),
            Self::Crc32c => h.crc32c = Some(s3s::crypto::Crc32c::new()),
            Self::Sha1 => h.sha1 = Some(s3s::crypto::Sha1::new()),
            Self::Sha256 => h.sha256 = Some(s3s::crypto::Sha256::new()),
            Self::Crc64Nvme => h.crc64nvme = Some(s3s::crypto::Crc64Nvme::new()),
        }
        h
    }

    pub(super) fn get(self, c: &Checksum) -> Option<String> {
        match self {
            Self::Crc32 => c.checksum_crc32.clone(),
            Self::Crc32c => c.checksum_crc32c.clone(),
            Self::Sha1 => c.checksum_sha1.clone(),
            Self::Sha256 => c.checksum_sha256.clone(),
            Self::Crc64Nvme => c.checksum_crc64nvme.clone(),
        }
    }

    pub(super) fn set(self, c: &mut Checksum, v: Option<String>) {
        match self {
            Self::Crc32 => c.checksum_crc32 = v,
            Self::Crc32c => c.checksum_crc32c = v,
            Self::Sha1 => c.checksum_sha1 = v,
            Self::Sha256 => c.checksum_sha256 = v,
            Self::Crc64Nvme => c.checksum_crc64nvme = v,
        }
    }

    /// The key of this algorithm's checksum in a stored attribute map.
    pub(super) fn key(self) -> String {
        format!("{HEADER_PREFIX}x-amz-checksum-{}", self.name())
    }
}

fn stored(map: &BTreeMap<String, String>, name: &str) -> Option<String> {
    map.get(&format!("{HEADER_PREFIX}{name}")).cloned()
}

/// The checksum algorithm and type of an upload (or of an object made by
/// one), from its stored attributes.
pub(super) fn of(map: &BTreeMap<String, String>) -> Option<(Algo, bool)> {
    let algo = Algo::parse(&stored(map, ALGORITHM)?)?;
    let full = stored(map, TYPE).as_deref() == Some(ChecksumType::FULL_OBJECT);
    Some((algo, full))
}

/// CreateMultipartUpload's `x-amz-checksum-algorithm` and `-type`: the
/// attributes to keep with the upload, after checking the pair is one S3
/// supports.
pub(super) fn for_upload(
    algorithm: Option<&ChecksumAlgorithm>,
    kind: Option<&ChecksumType>,
) -> S3Result<Vec<(String, String)>> {
    let Some(a) = algorithm else {
        if kind.is_some() {
            return Err(invalid_request(
                "x-amz-checksum-type needs x-amz-checksum-algorithm",
            ));
        }
        return Ok(Vec::new());
    };
    let algo = Algo::parse(a.as_str()).ok_or_else(|| {
        invalid_request(format!(
            "x-amz-checksum-algorithm {:?} is not one of CRC32, CRC32C, CRC64NVME, SHA1, SHA256",
            a.as_str()
        ))
    })?;
    let full = match kind.map(|k| k.as_str()) {
        None => algo == Algo::Crc64Nvme,
        Some(ChecksumType::FULL_OBJECT) => true,
        Some(ChecksumType::COMPOSITE) => false,
        Some(other) => {
            return Err(invalid_request(format!(
                "x-amz-checksum-type {other:?} is not COMPOSITE or FULL_OBJECT"
            )));
        }
    };
    match (algo, full) {
        (Algo::Sha1 | Algo::Sha256, true) => Err(invalid_request(format!(
            "The {} checksum algorithm supports only the COMPOSITE checksum type",
            algo.upper()
        ))),
        (Algo::Crc64Nvme, false) => Err(invalid_request(
            "The CRC64NVME checksum algorithm supports only the FULL_OBJECT checksum type",
        )),
        _ => Ok(vec![
            (format!("{HEADER_PREFIX}{ALGORITHM}"), algo.upper()),
            (
                format!("{HEADER_PREFIX}{TYPE}"),
                kind_name(full).to_string(),
            ),
        ]),
    }
}

fn kind_name(full: bool) -> &'static str {
    if full {
        ChecksumType::FULL_OBJECT
    } else {
        ChecksumType::COMPOSITE
    }
}

/// A part's checksum as listed in CompleteMultipartUpload.
fn listed(p: &CompletedPart, algo: Algo) -> Option<String> {
    match algo {
        Algo::Crc32 => p.checksum_crc32.clone(),
        Algo::Crc32c => p.checksum_crc32c.clone(),
        Algo::Sha1 => p.checksum_sha1.clone(),
        Algo::Sha256 => p.checksum_sha256.clone(),
        Algo::Crc64Nvme => p.checksum_crc64nvme.clone(),
    }
}

/// What CompleteMultipartUpload checks and stores: the parts' checksums
/// the client listed (by number) and the object's checksum it claims.
pub(super) struct Completion {
    pub algo: Algo,
    pub full: bool,
    pub listed: BTreeMap<u32, String>,
    pub claimed: Option<String>,
}

impl Completion {
    pub(super) fn new(
        upload: &BTreeMap<String, String>,
        parts: &[CompletedPart],
        claimed: &Checksum,
    ) -> Option<Self> {
        let (algo, full) = of(upload)?;
        Some(Self {
            algo,
            full,
            listed: parts
                .iter()
                .filter_map(|p| Some((p.part_number? as u32, listed(p, algo)?)))
                .collect(),
            claimed: algo.get(claimed),
        })
    }

    /// Checks the parts joined and the object's checksum (`whole`, when
    /// of the FULL_OBJECT type: computed over the bytes), and adds it to
    /// the object's attributes.
    pub(super) fn finish(
        self,
        parts: &[Part],
        whole: Option<Checksum>,
        md: &mut BTreeMap<String, String>,
    ) -> Result<(), ObjectError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut sums = Vec::with_capacity(parts.len());
        for p in parts {
            let Some(ours) = &p.checksum else {
                return Err(ObjectError::BadDigest(format!(
                    "part {} was uploaded without its {} checksum",
                    p.number,
                    self.algo.upper()
                )));
            };
            if let Some(theirs) = self.listed.get(&p.number)
                && theirs.trim() != ours
            {
                return Err(ObjectError::BadDigest(format!(
                    "The {} you specified for part {} did not match the part's checksum.",
                    self.algo.upper(),
                    p.number
                )));
            }
            sums.push(ours.as_str());
        }
        let value = if self.full {
            whole.and_then(|c| self.algo.get(&c)).unwrap_or_default()
        } else {
            let mut h = self.algo.hasher();
            for s in &sums {
                h.update(&b64.decode(s).unwrap_or_default());
            }
            let joined = self.algo.get(&h.finalize()).unwrap_or_default();
            format!("{joined}-{}", parts.len())
        };
        if let Some(c) = &self.claimed
            && c.trim() != value
        {
            return Err(ObjectError::BadDigest(format!(
                "The {} you specified did not match the calculated checksum.",
                self.algo.upper()
            )));
        }
        md.insert(self.algo.key(), value);
        md.insert(format!("{HEADER_PREFIX}{PART_CHECKSUMS}"), sums.join(","));
        Ok(())
    }
}

/// An object's checksums and their type, for an answer: those of the
/// whole object, or (`part`: its index) of one of its parts.
pub(super) fn answered(meta: &ObjectMeta, part: Option<usize>) -> Checksum {
    let multipart = of(&meta.metadata);
    let mut c = match (part, multipart, meta.part_checksums()) {
        (Some(i), Some((algo, _)), Some(sums)) => {
            let mut c = Checksum::default();
            algo.set(&mut c, sums.get(i).map(|s| s.to_string()));
            c
        }
        // A part of a multipart object without checksums.
        (Some(_), _, _) if meta.part_sizes().is_some() => return Checksum::default(),
        _ => super::body::stored_sums(meta),
    };
    let any = [
        &c.checksum_crc32,
        &c.checksum_crc32c,
        &c.checksum_sha1,
        &c.checksum_sha256,
        &c.checksum_crc64nvme,
    ]
    .iter()
    .any(|v| v.is_some());
    if any {
        let full = multipart.is_none_or(|(_, full)| full);
        c.checksum_type = Some(ChecksumType::from(kind_name(full).to_string()));
    }
    c
}
