//! Tables: features and labels read from CSV or Parquet bytes.
//!
//! The data is confidential and errors end up in logs, so no error here carries a cell value or
//! any row contents: they name the row (0-based, header excluded) and the column only.

use serde::{Deserialize, Serialize};

/// Which columns a job trains on, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Feature columns, in the order the model takes them.
    pub features: Vec<String>,
    /// The label column.
    pub label: String,
}

/// The encoding of a data owner's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Csv,
    Parquet,
}

/// Why a table could not be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("column {column:?} is missing")]
    MissingColumn { column: String },
    #[error("column {column:?} appears more than once")]
    DuplicateColumn { column: String },
    #[error("row {row}, column {column:?}: {reason}")]
    BadCell {
        row: usize,
        column: String,
        reason: &'static str,
    },
    #[error("column {column:?}: {reason}")]
    BadColumn { column: String, reason: String },
    #[error("schema: {0}")]
    Schema(&'static str),
    #[error("table shape: {0}")]
    Shape(String),
    #[error("CSV: {0}")]
    Csv(String),
    #[error("Parquet: {0}")]
    Parquet(String),
    #[error("no rows")]
    Empty,
}

/// Rows of `f32` features (row-major, schema order) with one `f32` label each. Every value is
/// finite: the constructors check it, so training never meets a NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    features: Vec<f32>,
    labels: Vec<f32>,
    n_features: usize,
}

impl Table {
    /// Builds a table from row-major features (`labels.len() × n_features` values).
    pub fn new(
        features: Vec<f32>,
        labels: Vec<f32>,
        n_features: usize,
    ) -> Result<Table, DataError> {
        if n_features == 0 {
            return Err(DataError::Shape("no feature columns".into()));
        }
        if labels.len().checked_mul(n_features) != Some(features.len()) {
            return Err(DataError::Shape(format!(
                "{} feature values for {} rows of {n_features} features",
                features.len(),
                labels.len()
            )));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(DataError::BadCell {
                row: i / n_features,
                column: format!("feature {}", i % n_features),
                reason: "not finite",
            });
        }
        if let Some(row) = labels.iter().position(|v| !v.is_finite()) {
            return Err(DataError::BadCell {
                row,
                column: "label".into(),
                reason: "not finite",
            });
        }
        Ok(Table {
            features,
            labels,
            n_features,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Row `i`'s features. Panics if `i >= n_rows()` (a caller's bug, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    /// Row `i`'s label. Panics if `i >= n_rows()`.
    pub fn label(&self, i: usize) -> f32 {
        self.labels[i]
    }

    pub fn features(&self) -> &[f32] {
        &self.features
    }

    pub fn labels(&self) -> &[f32] {
        &self.labels
    }

    /// The rows at `indices`, in that order. Panics on an index out of range.
    pub fn select(&self, indices: &[usize]) -> Table {
        let mut features = Vec::with_capacity(indices.len() * self.n_features);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Table {
            features,
            labels,
            n_features: self.n_features,
        }
    }

    /// The rows of every table, in order (e.g. every data owner's share of a job).
    pub fn concat(tables: &[&Table]) -> Result<Table, DataError> {
        let Some(first) = tables.first() else {
            return Err(DataError::Empty);
        };
        let n_features = first.n_features;
        if let Some(t) = tables.iter().find(|t| t.n_features != n_features) {
            return Err(DataError::Shape(format!(
                "tables of {n_features} and {} features cannot be joined",
                t.n_features
            )));
        }
        let rows: usize = tables.iter().map(|t| t.n_rows()).sum();
        let mut features = Vec::with_capacity(rows * n_features);
        let mut labels = Vec::with_capacity(rows);
        for t in tables {
            features.extend_from_slice(&t.features);
            labels.extend_from_slice(&t.labels);
        }
        Ok(Table {
            features,
            labels,
            n_features,
        })
    }
}

/// Reads the schema's columns from a CSV (header row required) or Parquet file. Other columns
/// are ignored. Labels are read as numbers; whether they suit the algorithm is training's
/// business (a regression label may be any number).
pub fn read_table(bytes: &[u8], format: DataFormat, schema: &Schema) -> Result<Table, DataError> {
    check_schema(schema)?;
    let table = match format {
        DataFormat::Csv => read_csv(bytes, schema)?,
        DataFormat::Parquet => read_parquet_contained(bytes, schema)?,
    };
    if table.n_rows() == 0 {
        return Err(DataError::Empty);
    }
    Ok(table)
}

fn check_schema(schema: &Schema) -> Result<(), DataError> {
    if schema.features.is_empty() {
        return Err(DataError::Schema("no feature columns"));
    }
    let mut seen = std::collections::HashSet::new();
    for name in schema.features.iter().chain(std::iter::once(&schema.label)) {
        if !seen.insert(name.as_str()) {
            return Err(DataError::DuplicateColumn {
                column: name.clone(),
            });
        }
    }
    Ok(())
}

/// The schema's columns in read order: features, then the label.
fn wanted(schema: &Schema) -> impl Iterator<Item = &String> {
    schema.features.iter().chain(std::iter::once(&schema.label))
}

/// Finds each wanted column among `names`; a name present twice is ambiguous, so refused.
fn locate<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
    schema: &Schema,
) -> Result<Vec<usize>, DataError> {
    wanted(schema)
        .map(|column| {
            let mut hits = names
                .clone()
                .enumerate()
                .filter(|(_, n)| *n == column.as_str());
            match (hits.next(), hits.next()) {
                (Some((i, _)), None) => Ok(i),
                (Some(_), Some(_)) => Err(DataError::DuplicateColumn {
                    column: column.clone(),
                }),
                (None, _) => Err(DataError::MissingColumn {
                    column: column.clone(),
                }),
            }
        })
        .collect()
}

/// A CSV error without row contents (csv's own messages are positional, but this keeps it so
/// whatever the crate's wording becomes).
fn csv_error(e: &csv::Error) -> DataError {
    let row = |pos: Option<&csv::Position>| {
        pos.map(|p| format!("row {}: ", p.record().saturating_sub(1)))
            .unwrap_or_default()
    };
    DataError::Csv(match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "{}{len} fields where the header has {expected_len}",
            row(pos.as_ref())
        ),
        csv::ErrorKind::Utf8 { pos, .. } => format!("{}invalid UTF-8", row(pos.as_ref())),
        csv::ErrorKind::Io(_) => "read error".into(),
        _ => "malformed CSV".into(),
    })
}

fn read_csv(bytes: &[u8], schema: &Schema) -> Result<Table, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = reader.byte_headers().map_err(|e| csv_error(&e))?.clone();
    if header.is_empty() {
        return Err(DataError::Csv("no header row".into()));
    }
    // Header names are compared as text, trimmed (spreadsheets leave spaces around names).
    let names: Vec<&str> = header
        .iter()
        .map(|h| std::str::from_utf8(h).map(str::trim).unwrap_or(""))
        .collect();
    let columns = locate(names.iter().copied(), schema)?;
    let names: Vec<&String> = wanted(schema).collect();
    let n_features = schema.features.len();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 0usize;
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(&e))?
    {
        for (k, (&c, name)) in columns.iter().zip(&names).enumerate() {
            let cell = record.get(c).unwrap_or(b"");
            let v = parse_cell(cell).map_err(|reason| DataError::BadCell {
                row,
                column: (*name).clone(),
                reason,
            })?;
            if k < n_features {
                features.push(v);
            } else {
                labels.push(v);
            }
        }
        row += 1;
    }
    Table::new(features, labels, n_features)
}

fn parse_cell(cell: &[u8]) -> Result<f32, &'static str> {
    let text = std::str::from_utf8(cell).map_err(|_| "not UTF-8")?.trim();
    if text.is_empty() {
        return Err("empty");
    }
    let v: f32 = text.parse().map_err(|_| "not a number")?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("not finite")
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> DataError {
    // parquet's messages describe the file structure (offsets, types, codecs), not values.
    DataError::Parquet(e.to_string())
}

/// The most cells (rows × (features + 1)) one Parquet row group may hold: 2^28 `f32`s, 1 GiB.
/// Writers keep row groups far smaller (pyarrow: 1 Mi rows by default); a larger claim is a
/// malformed or hostile file.
const MAX_ROW_GROUP_CELLS: usize = 1 << 28;

/// `read_parquet`, with any panic inside the `parquet` crate turned into an error. Fuzzing found
/// four ways a malformed file makes parquet 59.3 panic or over-allocate (negative chunk offsets,
/// a dictionary page's claimed size, a row count, and an out-of-bounds index in its
/// BYTE_STREAM_SPLIT decoder). The first three are refused by our own checks before parquet is
/// called; for what fuzzing has not found yet, a data owner's file must fail the job with an
/// error, not take the training runner down. Nothing we own is left half-updated by an unwind:
/// the partial table is dropped.
fn read_parquet_contained(bytes: &[u8], schema: &Schema) -> Result<Table, DataError> {
    std::panic::catch_unwind(|| read_parquet(bytes, schema)).unwrap_or_else(|_| {
        Err(DataError::Parquet(
            "malformed file: the Parquet reader failed on it".into(),
        ))
    })
}

fn read_parquet(bytes: &[u8], schema: &Schema) -> Result<Table, DataError> {
    use parquet::column::reader::ColumnReader;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let reader =
        SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).map_err(parquet_error)?;
    let meta = reader.metadata();
    let descr = meta.file_metadata().schema_descr();
    // Only top-level columns count: a nested leaf named like a wanted column is not it.
    let names: Vec<String> = descr
        .columns()
        .iter()
        .map(|c| {
            let parts = c.path().parts();
            if parts.len() == 1 {
                parts[0].clone()
            } else {
                String::new()
            }
        })
        .collect();
    let columns = locate(names.iter().map(String::as_str), schema)?;
    let names: Vec<&String> = wanted(schema).collect();
    let n_features = schema.features.len();
    let width = n_features + 1;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut base = 0usize;
    for g in 0..meta.num_row_groups() {
        let group = reader.get_row_group(g).map_err(parquet_error)?;
        let group_rows = usize::try_from(group.metadata().num_rows())
            .map_err(|_| DataError::Parquet("negative row count".into()))?;
        // Row counts come from the file: an absurd one must fail as an error, not abort the
        // process on allocation.
        let mut cells: Vec<f32> = Vec::new();
        // `try_reserve_exact` alone is not enough: with overcommit a large but possible size is
        // granted and then touched by `resize`, and a row count claiming a terabyte (found by the
        // `training_data` fuzz target, 2026-11-26; regression test `row_count_of_a_terabyte_is_an_error`)
        // aborts under sanitizers. A row group is bounded instead.
        let n_cells = group_rows
            .checked_mul(width)
            .filter(|&n| n <= MAX_ROW_GROUP_CELLS)
            .ok_or_else(|| DataError::Parquet("row count too large".into()))?;
        cells
            .try_reserve_exact(n_cells)
            .map_err(|_| DataError::Parquet("row count too large".into()))?;
        cells.resize(n_cells, 0.0);
        for (k, (&c, name)) in columns.iter().zip(&names).enumerate() {
            let desc = descr.column(c);
            if desc.max_rep_level() > 0 {
                return Err(DataError::BadColumn {
                    column: (*name).clone(),
                    reason: "repeated column".into(),
                });
            }
            let max_def = desc.max_def_level();
            let mut sink = Sink {
                cells: &mut cells,
                width,
                k,
                base,
                n: group_rows,
                column: name,
            };
            check_chunk_range(group.metadata().column(c))?;
            check_dictionary_pages(group.get_column_page_reader(c).map_err(parquet_error)?)?;
            let col = group.get_column_reader(c).map_err(parquet_error)?;
            match col {
                ColumnReader::BoolColumnReader(r) => {
                    sink.read(r, max_def, |&b| if b { 1.0 } else { 0.0 })?
                }
                ColumnReader::Int32ColumnReader(r) => sink.read(r, max_def, |&v| v as f32)?,
                ColumnReader::Int64ColumnReader(r) => sink.read(r, max_def, |&v| v as f32)?,
                ColumnReader::FloatColumnReader(r) => sink.read(r, max_def, |&v| v)?,
                ColumnReader::DoubleColumnReader(r) => sink.read(r, max_def, |&v| v as f32)?,
                _ => {
                    return Err(DataError::BadColumn {
                        column: (*name).clone(),
                        reason: format!(
                            "physical type {} (INT32, INT64, FLOAT, DOUBLE or BOOLEAN expected)",
                            desc.physical_type()
                        ),
                    })
                }
            }
        }
        for row in cells.chunks_exact(width) {
            features.extend_from_slice(&row[..n_features]);
            labels.push(row[n_features]);
        }
        base += group_rows;
    }
    Table::new(features, labels, n_features)
}

/// Refuses a column chunk whose offset or size is negative. parquet 59.3 asserts on these in
/// `ColumnChunkMetaData::byte_range`, which `get_column_reader` calls, so such a file would panic
/// the runtime instead of failing the job (found by the `training_data` fuzz target, 2026-11-26;
/// regression test `negative_column_chunk_offset_is_an_error`). The check is the assertion's own
/// condition, made before the call.
fn check_chunk_range(
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
) -> Result<(), DataError> {
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or_else(|| chunk.data_page_offset());
    if start < 0 || chunk.compressed_size() < 0 {
        return Err(DataError::Parquet(
            "malformed file: negative column chunk offset or size".into(),
        ));
    }
    Ok(())
}

/// Refuses a dictionary page that claims more values than its bytes can hold. parquet 59.3 sizes
/// the decoded dictionary from the page header's `num_values` before decoding (`set_dict` resizes a
/// vector to it), so a 1.3 KB file claiming 2^31 values asked for 16 GB and would get the runner
/// killed (found by the `training_data` fuzz target, 2026-11-26; regression test
/// `dictionary_num_values_bomb_is_an_error`). Every encoding spends at least one bit per value, so
/// `num_values <= 8 * len` holds for any well-formed page. This reads the chunk's pages once more
/// before the values are decoded.
fn check_dictionary_pages(
    pages: Box<dyn parquet::column::page::PageReader>,
) -> Result<(), DataError> {
    for page in pages {
        if let parquet::column::page::Page::DictionaryPage {
            buf, num_values, ..
        } = page.map_err(parquet_error)?
        {
            if u64::from(num_values) > 8 * buf.len() as u64 {
                return Err(DataError::Parquet(
                    "malformed file: dictionary page claims more values than it holds".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Where one Parquet column chunk's values go in the row-major buffer.
struct Sink<'a> {
    cells: &'a mut [f32],
    width: usize,
    k: usize,
    /// The row group's first row in the file (for error messages).
    base: usize,
    n: usize,
    column: &'a str,
}

impl Sink<'_> {
    fn read<T: parquet::data_type::DataType>(
        &mut self,
        mut reader: parquet::column::reader::ColumnReaderImpl<T>,
        max_def: i16,
        convert: impl Fn(&T::T) -> f32,
    ) -> Result<(), DataError> {
        let mut defs: Vec<i16> = Vec::new();
        let mut values: Vec<T::T> = Vec::new();
        let mut done = 0usize;
        while done < self.n {
            defs.clear();
            values.clear();
            let (records, _, levels) = reader
                .read_records(self.n - done, Some(&mut defs), None, &mut values)
                .map_err(parquet_error)?;
            if records == 0 {
                return Err(DataError::Parquet(format!(
                    "column {:?} ends before the row group does",
                    self.column
                )));
            }
            let mut next = values.iter();
            for i in 0..records {
                let row = self.base + done + i;
                let cell = (done + i) * self.width + self.k;
                // A definition level below the maximum is a null (max 0: the column is
                // required and there are no levels at all).
                let present = max_def == 0 || (i < levels && defs.get(i) == Some(&max_def));
                let value = if present { next.next() } else { None };
                let Some(value) = value else {
                    return Err(DataError::BadCell {
                        row,
                        column: self.column.to_string(),
                        reason: "null",
                    });
                };
                let v = convert(value);
                if !v.is_finite() {
                    return Err(DataError::BadCell {
                        row,
                        column: self.column.to_string(),
                        reason: "not finite",
                    });
                }
                if let Some(c) = self.cells.get_mut(cell) {
                    *c = v;
                }
            }
            done += records;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression files the `training_data` fuzz target found (2026-11-26): each must be a
    /// Parquet error, not a panic or an allocation of the size the file claims.
    fn refused_as_parquet(bytes: &[u8], schema: &Schema) -> bool {
        matches!(
            read_table(bytes, DataFormat::Parquet, schema),
            Err(DataError::Parquet(_))
        )
    }

    fn two_features() -> Schema {
        Schema {
            features: vec!["mean_radius".into(), "mean_texture".into()],
            label: "label".into(),
        }
    }

    #[test]
    fn negative_column_chunk_offset_is_an_error() {
        // Column chunk metadata with a negative offset or size made parquet 59.3 panic in
        // `byte_range`.
        let bytes = include_bytes!("../tests/data/negative_column_chunk_offset.parquet");
        assert!(refused_as_parquet(bytes, &two_features()));
    }

    #[test]
    fn byte_stream_split_out_of_bounds_is_an_error() {
        // Fourth run: a BYTE_STREAM_SPLIT page shorter than its values made parquet 59.3 index
        // out of bounds (byte_stream_split_decoder.rs:61). Contained: an error, not a panic.
        let bytes = include_bytes!("../tests/data/byte_stream_split_out_of_bounds.parquet");
        assert!(refused_as_parquet(bytes, &crate::fuzzing::schema()));
    }

    #[test]
    fn row_count_of_a_terabyte_is_an_error() {
        // A row group claiming ~10^11 rows made read_parquet reserve 1.1 TB.
        let bytes = include_bytes!("../tests/data/row_count_1tb.parquet");
        assert!(refused_as_parquet(bytes, &two_features()));
    }

    #[test]
    fn dictionary_num_values_bomb_is_an_error() {
        // A dictionary page header claiming 2^31 values made parquet 59.3 allocate 16 GB before
        // decoding.
        let bytes = include_bytes!("../tests/data/dictionary_num_values_bomb.parquet");
        assert!(refused_as_parquet(bytes, &two_features()));
    }
}
