//! Reading tables: CSV and Parquet, columns by name, and errors that name row and column but
//! never carry a value.

mod common;

use cordon_train::{
    read_table, train, Algorithm, DataError, DataFormat, GbdtParams, Schema, Table, TrainError,
};

fn schema(features: &[&str], label: &str) -> Schema {
    Schema {
        features: features.iter().map(|s| s.to_string()).collect(),
        label: label.into(),
    }
}

fn csv(text: &str, s: &Schema) -> Result<Table, DataError> {
    read_table(text.as_bytes(), DataFormat::Csv, s)
}

#[test]
fn csv_columns_by_name_in_schema_order() {
    let s = schema(&["b", "a"], "y");
    let t = csv("a,extra,b,y\n1,x,2.5,0\n-3e2, ,4,1\n", &s).unwrap();
    assert_eq!((t.n_rows(), t.n_features()), (2, 2));
    assert_eq!(t.row(0), [2.5, 1.0]);
    assert_eq!(t.row(1), [4.0, -300.0]);
    assert_eq!(t.labels(), [0.0, 1.0]);
}

/// A secret-looking cell: no error message may contain it.
const SECRET: &str = "4111x1111";

#[test]
fn csv_errors_name_row_and_column_but_no_value() {
    let s = schema(&["a", "b"], "y");
    let cases: Vec<(String, DataError)> = vec![
        (
            "a,y\n1,0\n".into(),
            DataError::MissingColumn { column: "b".into() },
        ),
        (
            "a,b,y,b\n1,2,0,3\n".into(),
            DataError::DuplicateColumn { column: "b".into() },
        ),
        (
            format!("a,b,y\n1,2,0\n3,{SECRET},1\n"),
            DataError::BadCell {
                row: 1,
                column: "b".into(),
                reason: "not a number",
            },
        ),
        (
            "a,b,y\n1,2,0\nNaN,2,1\n".into(),
            DataError::BadCell {
                row: 1,
                column: "a".into(),
                reason: "not finite",
            },
        ),
        (
            "a,b,y\n1,2,0\n1,2,inf\n".into(),
            DataError::BadCell {
                row: 1,
                column: "y".into(),
                reason: "not finite",
            },
        ),
        (
            "a,b,y\n1,,0\n".into(),
            DataError::BadCell {
                row: 0,
                column: "b".into(),
                reason: "empty",
            },
        ),
        ("a,b,y\n".into(), DataError::Empty),
    ];
    for (text, want) in cases {
        let got = csv(&text, &s).unwrap_err();
        assert_eq!(got, want, "{text:?}");
        assert!(!got.to_string().contains(SECRET));
    }
    // Ragged rows: a CSV error, positional only.
    let e = csv(&format!("a,b,y\n1,2,0\n{SECRET},1\n"), &s).unwrap_err();
    assert!(matches!(e, DataError::Csv(_)), "{e:?}");
    assert!(
        !e.to_string().contains(SECRET) && !e.to_string().contains("4111"),
        "{e}"
    );
    assert!(csv("", &s).is_err());
}

#[test]
fn schema_checks() {
    assert_eq!(
        csv("a,y\n1,0\n", &schema(&[], "y")).unwrap_err(),
        DataError::Schema("no feature columns")
    );
    assert_eq!(
        csv("a,y\n1,0\n", &schema(&["a", "a"], "y")).unwrap_err(),
        DataError::DuplicateColumn { column: "a".into() }
    );
    let json = r#"{"features": ["a"], "label": "y", "weights": "w"}"#;
    assert!(
        serde_json::from_str::<Schema>(json).is_err(),
        "unknown field accepted"
    );
    let f: DataFormat = serde_json::from_str("\"parquet\"").unwrap();
    assert_eq!(f, DataFormat::Parquet);
}

#[test]
fn algorithm_json_with_defaults() {
    let a: Algorithm = serde_json::from_str(r#"{"kind": "gbdt", "n_estimators": 7}"#).unwrap();
    assert_eq!(
        a,
        Algorithm::Gbdt(GbdtParams {
            n_estimators: 7,
            ..GbdtParams::default()
        })
    );
    let a: Algorithm = serde_json::from_str(r#"{"kind": "logistic_regression"}"#).unwrap();
    assert_eq!(a, Algorithm::LogisticRegression(Default::default()));
    assert!(serde_json::from_str::<Algorithm>(r#"{"kind": "gbdt", "depth": 3}"#).is_err());
    assert!(serde_json::from_str::<Algorithm>(r#"{"kind": "svm"}"#).is_err());
}

#[test]
fn training_refuses_non_binary_labels() {
    let t = Table::new(vec![1.0, 2.0, 3.0], vec![0.0, 1.0, 2.0], 1).unwrap();
    let gbdt = Algorithm::Gbdt(GbdtParams::default());
    assert_eq!(
        train(&gbdt, &t).unwrap_err(),
        TrainError::NotBinary { row: 2 }
    );
    let t = Table::new(vec![1.0, 2.0], vec![1.0, 1.0], 1).unwrap();
    assert_eq!(train(&gbdt, &t).unwrap_err(), TrainError::OneClass);
    let lr = Algorithm::LogisticRegression(Default::default());
    assert_eq!(train(&lr, &t).unwrap_err(), TrainError::OneClass);
}

#[test]
fn table_constructors_check_shape_and_values() {
    assert!(Table::new(vec![1.0; 5], vec![0.0; 2], 2).is_err());
    assert!(Table::new(vec![], vec![], 0).is_err());
    assert_eq!(
        Table::new(vec![1.0, f32::NAN], vec![0.0], 2).unwrap_err(),
        DataError::BadCell {
            row: 0,
            column: "feature 1".into(),
            reason: "not finite"
        }
    );
    let a = Table::new(vec![1.0, 2.0, 3.0, 4.0], vec![0.0, 1.0], 2).unwrap();
    let b = Table::new(vec![5.0, 6.0], vec![1.0], 2).unwrap();
    let c = Table::concat(&[&a, &b]).unwrap();
    assert_eq!(c.features(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(c.select(&[2, 0]).features(), [5.0, 6.0, 1.0, 2.0]);
    let narrow = Table::new(vec![1.0], vec![0.0], 1).unwrap();
    assert!(Table::concat(&[&a, &narrow]).is_err());
    assert_eq!(Table::concat(&[]).unwrap_err(), DataError::Empty);
}

mod parquet_files {
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::{
        BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type,
    };
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// Two row groups of every accepted physical type, plus a text column and a column with a
    /// null in the second group (row 3 of the file).
    fn file() -> Vec<u8> {
        let schema = Arc::new(
            parse_message_type(
                "message m {
                    required int32 i32;
                    required int64 i64;
                    required float f32;
                    optional double f64;
                    required boolean flag;
                    required binary name (UTF8);
                    optional double gappy;
                    required int64 label;
                }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let mut buf = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
        for g in 0..2 {
            let base = g * 2;
            let mut rg = writer.next_row_group().unwrap();
            let mut k = 0;
            while let Some(mut col) = rg.next_column().unwrap() {
                let v = |x: i32| base + x;
                match k {
                    0 => {
                        col.typed::<Int32Type>()
                            .write_batch(&[v(0), v(1)], None, None)
                            .unwrap();
                    }
                    1 => {
                        col.typed::<Int64Type>()
                            .write_batch(&[10 + v(0) as i64, 10 + v(1) as i64], None, None)
                            .unwrap();
                    }
                    2 => {
                        col.typed::<FloatType>()
                            .write_batch(&[0.5, 1.5], None, None)
                            .unwrap();
                    }
                    3 => {
                        col.typed::<DoubleType>()
                            .write_batch(&[0.25, 0.75], Some(&[1, 1]), None)
                            .unwrap();
                    }
                    4 => {
                        col.typed::<BoolType>()
                            .write_batch(&[true, g == 1], None, None)
                            .unwrap();
                    }
                    5 => {
                        col.typed::<ByteArrayType>()
                            .write_batch(
                                &[ByteArray::from(SECRET), ByteArray::from("x")],
                                None,
                                None,
                            )
                            .unwrap();
                    }
                    6 => {
                        // Second group: one value, then a null.
                        let (vals, defs): (&[f64], &[i16]) = if g == 0 {
                            (&[1.0, 2.0], &[1, 1])
                        } else {
                            (&[3.0], &[1, 0])
                        };
                        col.typed::<DoubleType>()
                            .write_batch(vals, Some(defs), None)
                            .unwrap();
                    }
                    _ => {
                        col.typed::<Int64Type>()
                            .write_batch(&[(base % 2) as i64, 1], None, None)
                            .unwrap();
                    }
                }
                col.close().unwrap();
                k += 1;
            }
            rg.close().unwrap();
        }
        writer.close().unwrap();
        buf
    }

    #[test]
    fn every_numeric_physical_type_across_row_groups() {
        let s = schema(&["f64", "i32", "i64", "f32", "flag"], "label");
        let t = read_table(&file(), DataFormat::Parquet, &s).unwrap();
        assert_eq!(t.n_rows(), 4);
        assert_eq!(t.row(0), [0.25, 0.0, 10.0, 0.5, 1.0]);
        assert_eq!(t.row(3), [0.75, 3.0, 13.0, 1.5, 1.0]);
        assert_eq!(t.row(2)[4], 1.0);
        assert_eq!(t.row(1)[4], 0.0);
        assert_eq!(t.labels(), [0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn nulls_and_text_columns_are_named_not_shown() {
        let bytes = file();
        let e = read_table(&bytes, DataFormat::Parquet, &schema(&["gappy"], "label")).unwrap_err();
        assert_eq!(
            e,
            DataError::BadCell {
                row: 3,
                column: "gappy".into(),
                reason: "null"
            }
        );
        let e = read_table(&bytes, DataFormat::Parquet, &schema(&["name"], "label")).unwrap_err();
        assert!(
            matches!(&e, DataError::BadColumn { column, .. } if column == "name"),
            "{e:?}"
        );
        assert!(!e.to_string().contains(SECRET));
        let e = read_table(&bytes, DataFormat::Parquet, &schema(&["nope"], "label")).unwrap_err();
        assert_eq!(
            e,
            DataError::MissingColumn {
                column: "nope".into()
            }
        );
        let e = read_table(
            &bytes[..bytes.len() / 2],
            DataFormat::Parquet,
            &schema(&["i32"], "label"),
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Parquet(_)), "{e:?}");
    }

    /// hospital_c.parquet is what pyarrow writes by default (snappy, DOUBLE features, INT64
    /// label): the same table as hospital_c.csv.
    #[test]
    fn pyarrow_fixture_equals_the_csv() {
        let parquet = common::load("hospital_c.parquet");
        let csv = common::load("hospital_c.csv");
        assert_eq!(parquet.n_rows(), 52);
        assert_eq!(parquet.labels(), csv.labels());
        // The CSV holds the doubles' shortest text: parsed straight to f32 or through f64,
        // the two roundings may differ by one unit in the last place, nothing more.
        for (a, b) in parquet.features().iter().zip(csv.features()) {
            assert!(
                (a - b).abs() <= f32::EPSILON * a.abs().max(b.abs()),
                "{a} vs {b}"
            );
        }
    }
}
