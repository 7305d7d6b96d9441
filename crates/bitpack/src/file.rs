//! The `bitpack` file format: packed tensors inside safetensors, with a versioned `__metadata__`.
//!
//! # Format (version 1)
//! A plain safetensors file. Each packed tensor is one safetensors tensor holding its raw
//! storage, plus entries `bitpack.<name>.<field>` in `__metadata__`:
//!
//! | encoding | safetensors dtype / shape | meaning |
//! |---|---|---|
//! | `sign-plane` | `U64` `[rows, words_per_row]` | a [`BitTensor`]; words little-endian |
//! | `int8` | `I8` `[rows, row_stride]` | an [`Int8Tensor`]'s padded storage |
//! | `codes` | `U8` `[ceil(len * bits / 8)]` | dense level codes ([`crate::levels::encode_codes`]) |
//!
//! | key | value |
//! |---|---|
//! | `bitpack.format_version` | `"1"` |
//! | `bitpack.<name>.encoding` | `sign-plane`, `int8` or `codes` |
//! | `bitpack.<name>.bits` | `1` for sign planes, else the level set's bits (2, 3, or `K`) |
//! | `bitpack.<name>.levels` | `sign`, `ternary`, `pow2` or `uniform:K` |
//! | `bitpack.<name>.layout` | `row-major`, `nhwc` or `ohwi` |
//! | `bitpack.<name>.shape` | logical dims, comma-separated, e.g. `64,3,3,64` |
//! | `bitpack.<name>.words_per_row` | sign-plane only |
//! | `bitpack.<name>.row_stride` | int8 only (bytes per row) |
//! | `bitpack.<name>.scale` | int8 and codes: real value = level * scale |
//!
//! Other `__metadata__` keys (not starting with `bitpack.`) are the caller's, returned by
//! [`PackedFile::metadata`].
//!
//! # Loading
//! [`load_tensors`] validates everything (version, every key, dtype, storage shape, data
//! length, zero pad bits, legal levels) and never panics on malformed input. Sign planes and
//! int8 data borrow the input buffer (zero-copy) when it is suitably aligned (8 bytes for
//! `U64`; files written here place `U64` data first, 8-byte aligned from the file start) and
//! the host is little-endian; otherwise they are copied. Dense codes are always decoded to an
//! owned [`Int8Tensor`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::{Dtype, SafeTensors};

use crate::bits::BitTensor;
use crate::error::{BitpackError, Result};
use crate::layout::Layout;
use crate::levels::{Int8Tensor, LevelSet, name_tensor};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// The `__metadata__` key holding the format version.
pub const VERSION_KEY: &str = "bitpack.format_version";

const PREFIX: &str = "bitpack.";

/// A packed tensor of any kind, as stored in a file.
#[derive(Debug, Clone, PartialEq)]
pub enum PackedTensor<'a> {
    /// A 1-bit sign plane.
    Bits(BitTensor<'a>),
    /// 2-3 bit int8 levels.
    Int8(Int8Tensor<'a>),
}

impl<'a> PackedTensor<'a> {
    /// The 1-bit tensor, if this is one.
    pub fn as_bits(&self) -> Option<&BitTensor<'a>> {
        match self {
            PackedTensor::Bits(t) => Some(t),
            PackedTensor::Int8(_) => None,
        }
    }

    /// The int8-level tensor, if this is one.
    pub fn as_int8(&self) -> Option<&Int8Tensor<'a>> {
        match self {
            PackedTensor::Int8(t) => Some(t),
            PackedTensor::Bits(_) => None,
        }
    }

    /// Bits per value: 1, 2 or 3.
    pub fn bits(&self) -> u32 {
        match self {
            PackedTensor::Bits(_) => 1,
            PackedTensor::Int8(t) => t.bits(),
        }
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        match self {
            PackedTensor::Bits(t) => t.layout(),
            PackedTensor::Int8(t) => t.layout(),
        }
    }

    /// The logical dims.
    pub fn dims(&self) -> &[usize] {
        match self {
            PackedTensor::Bits(t) => t.dims(),
            PackedTensor::Int8(t) => t.dims(),
        }
    }

    /// Whether the storage borrows a file buffer.
    pub fn is_borrowed(&self) -> bool {
        match self {
            PackedTensor::Bits(t) => t.is_borrowed(),
            PackedTensor::Int8(t) => t.is_borrowed(),
        }
    }

    /// An owned copy.
    pub fn into_owned(self) -> PackedTensor<'static> {
        match self {
            PackedTensor::Bits(t) => PackedTensor::Bits(t.into_owned()),
            PackedTensor::Int8(t) => PackedTensor::Int8(t.into_owned()),
        }
    }
}

impl<'a> From<BitTensor<'a>> for PackedTensor<'a> {
    fn from(t: BitTensor<'a>) -> Self {
        PackedTensor::Bits(t)
    }
}

impl<'a> From<Int8Tensor<'a>> for PackedTensor<'a> {
    fn from(t: Int8Tensor<'a>) -> Self {
        PackedTensor::Int8(t)
    }
}

/// How [`Int8Tensor`]s are written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MultiBitStorage {
    /// The padded int8 storage as is (`I8`); loads zero-copy.
    #[default]
    Int8,
    /// Dense 2/3-bit codes (`U8`), 2.7-4x smaller; decoded to int8 at load.
    DenseCodes,
}

/// Options for writing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SaveOptions {
    /// On-disk encoding of 2-3 bit tensors.
    pub multibit: MultiBitStorage,
}

/// The tensors and caller metadata of a loaded file; tensors may borrow the input buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedFile<'a> {
    tensors: BTreeMap<String, PackedTensor<'a>>,
    metadata: BTreeMap<String, String>,
}

impl<'a> PackedFile<'a> {
    /// The tensor called `name`.
    ///
    /// # Errors
    /// [`BitpackError::NoSuchTensor`].
    pub fn get(&self, name: &str) -> Result<&PackedTensor<'a>> {
        self.tensors
            .get(name)
            .ok_or_else(|| BitpackError::NoSuchTensor {
                tensor: name.to_string(),
            })
    }

    /// The 1-bit tensor called `name`.
    ///
    /// # Errors
    /// [`BitpackError::NoSuchTensor`], or [`BitpackError::BadMetadata`] if it is not 1-bit.
    pub fn bits(&self, name: &str) -> Result<&BitTensor<'a>> {
        let t = self.get(name)?;
        t.as_bits()
            .ok_or_else(|| wrong_kind(name, t, "a 1-bit tensor"))
    }

    /// The int8-level tensor called `name`.
    ///
    /// # Errors
    /// [`BitpackError::NoSuchTensor`], or [`BitpackError::BadMetadata`] if it is 1-bit.
    pub fn int8(&self, name: &str) -> Result<&Int8Tensor<'a>> {
        let t = self.get(name)?;
        t.as_int8()
            .ok_or_else(|| wrong_kind(name, t, "an int8-level tensor"))
    }

    /// Tensors by name, in name order.
    pub fn tensors(&self) -> &BTreeMap<String, PackedTensor<'a>> {
        &self.tensors
    }

    /// The caller's metadata (every `__metadata__` key not starting with `bitpack.`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// An owned copy that no longer borrows the input buffer.
    pub fn into_owned(self) -> PackedFile<'static> {
        PackedFile {
            tensors: self
                .tensors
                .into_iter()
                .map(|(k, v)| (k, v.into_owned()))
                .collect(),
            metadata: self.metadata,
        }
    }

    /// Splits into tensors and caller metadata.
    pub fn into_parts(self) -> (BTreeMap<String, PackedTensor<'a>>, BTreeMap<String, String>) {
        (self.tensors, self.metadata)
    }
}

fn wrong_kind(name: &str, t: &PackedTensor<'_>, wanted: &str) -> BitpackError {
    BitpackError::BadMetadata {
        tensor: name.to_string(),
        key: key(name, "bits"),
        value: t.bits().to_string(),
        reason: format!("expected {wanted}"),
    }
}

fn key(name: &str, field: &str) -> String {
    format!("{PREFIX}{name}.{field}")
}

struct Raw<'b> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Cow<'b, [u8]>,
}

/// Writes a safetensors container with a deterministic header (sorted keys), so the same
/// tensors always give the same bytes. Data order follows safetensors' own writer (larger
/// dtypes first, then by name), so `U64` words start 8-byte aligned.
fn serialize_sorted(
    mut raws: Vec<(String, Raw<'_>)>,
    meta: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    raws.sort_by(|(an, a), (bn, b)| b.dtype.cmp(&a.dtype).then_with(|| an.cmp(bn)));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".to_string(), serde_json::json!(meta));
    let mut offset = 0usize;
    for (name, raw) in &raws {
        let end = offset + raw.data.len();
        let dtype = match raw.dtype {
            Dtype::U64 => "U64",
            Dtype::I8 => "I8",
            _ => "U8",
        };
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": raw.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_string(&header)
        .map_err(|e| BitpackError::Container(e.to_string()))?
        .into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, raw) in &raws {
        out.extend_from_slice(&raw.data);
    }
    Ok(out)
}

fn words_le_bytes(words: &[u64]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(words))
    } else {
        Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect())
    }
}

/// Serialises tensors and caller metadata to a safetensors byte buffer (format version 1).
/// The output is deterministic: the same input always gives the same bytes.
///
/// ```
/// use std::collections::BTreeMap;
/// use bitpack::{BitTensor, Int8Tensor, Layout, LevelSet, file::{load_tensors, to_bytes, PackedTensor, SaveOptions}};
/// let w = BitTensor::from_f32(Layout::Ohwi, &[2, 3, 3, 5], &[-1.0; 90]).unwrap();
/// let q = Int8Tensor::from_levels(LevelSet::Ternary, Layout::RowMajor, &[1, 3], &[1, 0, -1]).unwrap();
/// let (w, q) = (PackedTensor::from(w), PackedTensor::from(q));
/// let meta = BTreeMap::from([("model".to_string(), "convnet-a".to_string())]);
/// let bytes = to_bytes(&[("conv1", &w), ("fc", &q)], &meta, SaveOptions::default()).unwrap();
/// let file = load_tensors(&bytes).unwrap();
/// assert_eq!(file.get("conv1").unwrap(), &w);
/// assert_eq!(file.int8("fc").unwrap().to_levels(), vec![1, 0, -1]);
/// assert_eq!(file.metadata()["model"], "convnet-a");
/// ```
///
/// # Errors
/// [`BitpackError::InvalidShape`] for a tensor with a zero dim, [`BitpackError::BadMetadata`]
/// for a duplicate name (or `__metadata__`) or a caller key starting with `bitpack.`.
pub fn to_bytes(
    tensors: &[(&str, &PackedTensor<'_>)],
    extra_metadata: &BTreeMap<String, String>,
    options: SaveOptions,
) -> Result<Vec<u8>> {
    let mut meta: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in extra_metadata {
        if k.starts_with(PREFIX) {
            return Err(BitpackError::BadMetadata {
                tensor: String::new(),
                key: k.clone(),
                value: v.clone(),
                reason: "caller metadata keys must not start with `bitpack.`".to_string(),
            });
        }
        meta.insert(k.clone(), v.clone());
    }
    meta.insert(VERSION_KEY.to_string(), FORMAT_VERSION.to_string());

    let mut raws: Vec<(String, Raw<'_>)> = Vec::with_capacity(tensors.len());
    for &(name, t) in tensors {
        if raws.iter().any(|(n, _)| n == name) || name == "__metadata__" {
            return Err(BitpackError::BadMetadata {
                tensor: name.to_string(),
                key: "name".to_string(),
                value: name.to_string(),
                reason: "tensor names must be unique and not `__metadata__`".to_string(),
            });
        }
        let dims = t.dims();
        if dims.contains(&0) {
            return Err(BitpackError::InvalidShape {
                tensor: name.to_string(),
                shape: dims.to_vec(),
                reason: "files hold no empty tensors (every dim must be at least 1)",
            });
        }
        let mut put = |field: &str, value: String| meta.insert(key(name, field), value);
        put("bits", t.bits().to_string());
        put("layout", t.layout().name().to_string());
        put(
            "shape",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        let raw = match t {
            PackedTensor::Bits(b) => {
                put("encoding", "sign-plane".to_string());
                put("levels", "sign".to_string());
                put("words_per_row", b.words_per_row().to_string());
                Raw {
                    dtype: Dtype::U64,
                    shape: vec![b.rows(), b.words_per_row()],
                    data: words_le_bytes(b.words()),
                }
            }
            PackedTensor::Int8(q) => {
                put("levels", q.level_set().to_string());
                put("scale", format!("{:?}", q.scale()));
                match options.multibit {
                    MultiBitStorage::Int8 => {
                        put("encoding", "int8".to_string());
                        put("row_stride", q.row_stride().to_string());
                        Raw {
                            dtype: Dtype::I8,
                            shape: vec![q.rows(), q.row_stride()],
                            data: Cow::Borrowed(bytemuck::cast_slice(q.data())),
                        }
                    }
                    MultiBitStorage::DenseCodes => {
                        put("encoding", "codes".to_string());
                        let codes = q.to_codes().map_err(|e| name_tensor(e, name))?;
                        Raw {
                            dtype: Dtype::U8,
                            shape: vec![codes.len()],
                            data: Cow::Owned(codes),
                        }
                    }
                }
            }
        };
        raws.push((name.to_string(), raw));
    }
    serialize_sorted(raws, meta)
}

/// Writes [`to_bytes`] output to `writer`.
///
/// # Errors
/// As [`to_bytes`], plus [`BitpackError::Io`].
pub fn write_tensors<W: Write>(
    mut writer: W,
    tensors: &[(&str, &PackedTensor<'_>)],
    extra_metadata: &BTreeMap<String, String>,
    options: SaveOptions,
) -> Result<()> {
    let bytes = to_bytes(tensors, extra_metadata, options)?;
    writer
        .write_all(&bytes)
        .and_then(|()| writer.flush())
        .map_err(|e| io_err("<writer>", e))
}

/// Writes a file atomically: the bytes go to a temporary file in the same directory, which is
/// synced and then renamed over `path`, so readers see the old file or the new one, never a
/// partial one. Uses [`SaveOptions::default`].
///
/// ```
/// use std::collections::BTreeMap;
/// use bitpack::{BitTensor, Layout, PackedTensor, file::read_tensors, save_tensors};
/// let t = PackedTensor::from(BitTensor::from_f32(Layout::RowMajor, &[2, 70], &[-1.0; 140]).unwrap());
/// let path = std::env::temp_dir().join(format!("bitpack-doc-{}.safetensors", std::process::id()));
/// save_tensors(&path, &[("fc", &t)], &BTreeMap::new()).unwrap();
/// assert_eq!(read_tensors(&path).unwrap().get("fc").unwrap(), &t);
/// std::fs::remove_file(&path).unwrap();
/// ```
///
/// # Errors
/// As [`to_bytes`], plus [`BitpackError::Io`].
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, &PackedTensor<'_>)],
    extra_metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_tensors_with(path, tensors, extra_metadata, SaveOptions::default())
}

/// [`save_tensors`] with explicit options.
///
/// # Errors
/// As [`to_bytes`], plus [`BitpackError::Io`].
pub fn save_tensors_with(
    path: impl AsRef<Path>,
    tensors: &[(&str, &PackedTensor<'_>)],
    extra_metadata: &BTreeMap<String, String>,
    options: SaveOptions,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(tensors, extra_metadata, options)?;
    write_atomic(path, &bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let shown = path.display().to_string();
    let file_name = path
        .file_name()
        .ok_or_else(|| io_err(&shown, std::io::Error::other("path has no file name")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&shown, e));
    }
    Ok(())
}

fn io_err(path: &str, e: std::io::Error) -> BitpackError {
    BitpackError::Io {
        path: path.to_string(),
        source: Arc::new(e),
    }
}

/// Reads and validates a file, returning owned tensors.
///
/// # Errors
/// [`BitpackError::Io`] or anything [`load_tensors`] returns.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<PackedFile<'static>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(&path.display().to_string(), e))?;
    Ok(load_tensors(&bytes)?.into_owned())
}

/// Parses and validates a file held in memory; tensors borrow `bytes` where alignment allows
/// (see the [module docs](self)). Never panics on malformed input.
///
/// ```
/// use bitpack::{BitpackError, load_tensors};
/// assert!(matches!(load_tensors(b"not a safetensors file"), Err(BitpackError::Container(_))));
/// ```
///
/// # Errors
/// [`BitpackError::Container`] for a malformed safetensors container,
/// [`BitpackError::MissingMetadata`], [`BitpackError::UnsupportedVersion`],
/// [`BitpackError::BadMetadata`], [`BitpackError::InvalidShape`],
/// [`BitpackError::LengthMismatch`], [`BitpackError::NonZeroPadding`],
/// [`BitpackError::IllegalLevel`]; each names the tensor and field.
pub fn load_tensors(bytes: &[u8]) -> Result<PackedFile<'_>> {
    let container = |e: safetensors::SafeTensorError| BitpackError::Container(e.to_string());
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(container)?;
    let st = SafeTensors::deserialize(bytes).map_err(container)?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    match meta.get(VERSION_KEY) {
        None => {
            return Err(BitpackError::MissingMetadata {
                tensor: String::new(),
                key: VERSION_KEY.to_string(),
            });
        }
        Some(v) if v != FORMAT_VERSION => {
            return Err(BitpackError::UnsupportedVersion {
                found: v.clone(),
                supported: FORMAT_VERSION,
            });
        }
        Some(_) => {}
    }
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let t = load_one(meta, name, view.dtype(), view.shape(), view.data())?;
        tensors.insert(name.to_string(), t);
    }
    let metadata = meta
        .iter()
        .filter(|(k, _)| !k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(PackedFile { tensors, metadata })
}

struct Meta<'m> {
    meta: &'m HashMap<String, String>,
    name: &'m str,
}

impl Meta<'_> {
    fn get(&self, field: &str) -> Result<&str> {
        let k = key(self.name, field);
        self.meta
            .get(&k)
            .map(String::as_str)
            .ok_or_else(|| BitpackError::MissingMetadata {
                tensor: self.name.to_string(),
                key: k,
            })
    }

    fn bad(&self, field: &str, value: &str, reason: impl Into<String>) -> BitpackError {
        BitpackError::BadMetadata {
            tensor: self.name.to_string(),
            key: key(self.name, field),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        let v = self.get(field)?;
        v.parse()
            .map_err(|_| self.bad(field, v, "expected a non-negative integer"))
    }

    fn parsed<T: std::str::FromStr<Err = BitpackError>>(&self, field: &str) -> Result<T> {
        let v = self.get(field)?;
        v.parse().map_err(|e| match e {
            BitpackError::BadMetadata { reason, .. } => self.bad(field, v, reason),
            other => other,
        })
    }

    fn expect_eq(&self, field: &str, value: &str, want: &str, what: &str) -> Result<()> {
        if value == want {
            Ok(())
        } else {
            Err(self.bad(field, value, format!("expected {want} ({what})")))
        }
    }
}

fn load_one<'b>(
    meta: &HashMap<String, String>,
    name: &str,
    dtype: Dtype,
    storage_shape: &[usize],
    data: &'b [u8],
) -> Result<PackedTensor<'b>> {
    let m = Meta { meta, name };
    let encoding = m.get("encoding")?;
    let layout: Layout = m.parsed("layout")?;
    let shape_str = m.get("shape")?;
    let dims = shape_str
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| {
            m.bad(
                "shape",
                shape_str,
                "expected comma-separated non-negative integers",
            )
        })?;
    if dims.contains(&0) {
        return Err(BitpackError::InvalidShape {
            tensor: name.to_string(),
            shape: dims,
            reason: "a stored tensor has no zero dims",
        });
    }
    let g = layout.geometry(name, &dims)?;
    let bits = m.get("bits")?;
    let levels_str = m.get("levels")?;
    let check_storage =
        |want_dtype: Dtype, want_shape: &[usize], want_bytes: usize| -> Result<()> {
            if dtype != want_dtype {
                return Err(m.bad(
                    "encoding",
                    encoding,
                    format!("stored with dtype {dtype:?}, expected {want_dtype:?}"),
                ));
            }
            if data.len() != want_bytes {
                return Err(BitpackError::LengthMismatch {
                    tensor: name.to_string(),
                    field: "data",
                    expected: want_bytes,
                    got: data.len(),
                });
            }
            if storage_shape != want_shape {
                return Err(m.bad(
                    "shape",
                    shape_str,
                    format!(
                        "storage shape {storage_shape:?} does not match the implied {want_shape:?}"
                    ),
                ));
            }
            Ok(())
        };
    match encoding {
        "sign-plane" => {
            m.expect_eq("bits", bits, "1", "sign-plane")?;
            m.expect_eq("levels", levels_str, "sign", "sign-plane")?;
            let wpr = m.usize("words_per_row")?;
            let want_wpr = g.words_per_row();
            m.expect_eq(
                "words_per_row",
                &wpr.to_string(),
                &want_wpr.to_string(),
                "implied by shape and layout",
            )?;
            // Cannot overflow: `Layout::geometry` checked words * 8.
            check_storage(Dtype::U64, &[g.rows, want_wpr], g.words() * 8)?;
            let words: Cow<'b, [u64]> = match bytemuck::try_cast_slice::<u8, u64>(data) {
                Ok(w) if cfg!(target_endian = "little") => Cow::Borrowed(w),
                _ => Cow::Owned(
                    data.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                ),
            };
            Ok(PackedTensor::Bits(BitTensor::from_words(
                name, layout, &dims, words,
            )?))
        }
        "int8" | "codes" => {
            let levels: LevelSet = m.parsed("levels")?;
            m.expect_eq(
                "bits",
                bits,
                &levels.bits().to_string(),
                "implied by levels",
            )?;
            let scale_str = m.get("scale")?;
            let scale: f32 = scale_str
                .parse()
                .map_err(|_| m.bad("scale", scale_str, "expected a number"))?;
            let t = if encoding == "int8" {
                let stride = m.usize("row_stride")?;
                let want = g.int8_row_stride();
                m.expect_eq(
                    "row_stride",
                    &stride.to_string(),
                    &want.to_string(),
                    "implied by shape and layout",
                )?;
                check_storage(Dtype::I8, &[g.rows, want], g.int8_len())?;
                Int8Tensor::from_storage(
                    name,
                    levels,
                    layout,
                    &dims,
                    bytemuck::cast_slice::<u8, i8>(data),
                )?
            } else {
                let nbytes = g
                    .len()
                    .checked_mul(levels.bits() as usize)
                    .map(|b| b.div_ceil(8))
                    .ok_or_else(|| BitpackError::InvalidShape {
                        tensor: name.to_string(),
                        shape: dims.clone(),
                        reason: "code bit count overflows usize",
                    })?;
                check_storage(Dtype::U8, &[nbytes], nbytes)?;
                Int8Tensor::from_codes(name, levels, layout, &dims, data)?
            };
            let t = t
                .with_scale(scale)
                .map_err(|_| m.bad("scale", scale_str, "scale must be finite and positive"))?;
            Ok(PackedTensor::Int8(t))
        }
        other => Err(m.bad(
            "encoding",
            other,
            "valid encodings are: sign-plane, int8, codes",
        )),
    }
}
