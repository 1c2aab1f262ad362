"""Writes the seed corpus of the `training_data` fuzz target (fuzz/corpus/training_data): small CSVs
cut from testdata/training/hospital_c.csv, that fixture's Parquet file, and two small Parquet files
(snappy; uncompressed with a null, a BOOLEAN label and two row groups). Needs pyarrow
(requirements-training.txt). Run from the repository root: python3 scripts/make_fuzz_training_seeds.py
"""
import csv
import io
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

d = "fuzz/corpus/training_data/"
rows = list(csv.reader(open("testdata/training/hospital_c.csv")))
h = rows[0]
i = [h.index("mean_radius"), h.index("mean_texture"), h.index("label")]
small = [[r[j] for j in i] for r in rows[:13]]
open(d + "small.csv", "w").write("\n".join(",".join(r) for r in small) + "\n")
# All columns, fewer rows, CRLF line ends.
open(d + "wide_crlf.csv", "w", newline="").write("\r\n".join(",".join(r) for r in rows[:6]) + "\r\n")
# Reordered columns, quoted cells, an extra text column.
out = io.StringIO()
w = csv.writer(out, quoting=csv.QUOTE_ALL)
w.writerow(["label", "note", "mean_texture", "mean_radius"])
for r in rows[1:9]:
    w.writerow([r[i[2]], 'a, "quoted" note', r[i[1]], r[i[0]]])
open(d + "quoted.csv", "w").write(out.getvalue())
shutil.copy("testdata/training/hospital_c.parquet", d + "hospital_c.parquet")
t = pa.table({
    "mean_radius": pa.array([float(r[i[0]]) for r in rows[1:9]], pa.float64()),
    "mean_texture": pa.array([float(r[i[1]]) for r in rows[1:9]], pa.float32()),
    "label": pa.array([int(r[i[2]]) for r in rows[1:9]], pa.int64()),
})
pq.write_table(t, d + "small.parquet", compression="snappy")
t2 = pa.table({
    "mean_radius": pa.array([1.0, None, 3.0, 4.0]),
    "mean_texture": pa.array([1, 2, 3, 4], pa.int32()),
    "label": pa.array([True, False, True, False]),
})
pq.write_table(t2, d + "nullable_bool.parquet", compression="none", row_group_size=2)
