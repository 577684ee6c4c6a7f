"""parquet-normalize vs pandas vs DuckDB on one messy CSV, in one run.

    python bench/bench_parquet.py [--rows 2000000] [--repeat 3] [--scale 4] [--keep DIR]

The input is generated (seeded): ``id, Email, Full Name, signup, amount, active, country``
with emails padded with spaces and in mixed case, signup dates in two formats
(``%Y-%m-%d`` and ``%d/%m/%Y``), empty and ``N/A``/``NULL`` values, a ragged row every
997 rows and a non-integer id every 1,999 rows. Every contender applies the same rules:
trimmed strings, null tokens, lower-cased emails, integer ids, decimal(12,2) amounts,
booleans, dates in either format; rows with a bad value or a ragged shape are left out
of the Parquet output (zstd). Contenders, each a separate process (start-up included):

- ``worker``: ``python -m workers run parquet-normalize`` with a schema contract next to
  the input (also: sha256 of the input, rejects.jsonl with line numbers, stats, manifest);
- ``pandas``: ``read_csv(dtype=str)`` of the whole file, vectorized rules, ``to_parquet``;
- ``duckdb``: one ``COPY (SELECT ...) TO ... (FORMAT parquet, COMPRESSION zstd)`` over
  ``read_csv(all_varchar=true, ignore_errors=true)`` (it writes no rejects file).

Timing: bench/harness.py (interleaved, order rotated, medians). Peak RSS: each contender
run once more under a fresh wrapper process that reports ``RUSAGE_CHILDREN`` max RSS.
The same is repeated for the worker on a ``--scale`` times larger file: its peak RSS must
not follow the file size. The load average is printed, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import Contender, compare, machine  # noqa: E402

CONTRACT = {
    "columns": {
        "id": {"type": "integer", "required": True},
        "email": {"type": "lower_string", "required": True},
        "full_name": "string",
        "signup": {"type": "date", "formats": ["%Y-%m-%d", "%d/%m/%Y"]},
        "amount": "decimal(12,2)",
        "active": "boolean",
        "country": "string",
    }
}
NULLS = ("", "NULL", "null", "N/A", "n/a", "NA", "None", "-")
FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "Gus", "Hiro", "Ines", "Jon"]
LAST = ["Smith", "García", "Ngata", "Olsen", "Poirier", "Quinn", "Rossi", "Schmidt", "Tanaka", "Ueda"]
COUNTRIES = ["FR", "DE", "US", "JP", "BR", "N/A", "", "NZ"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """The messy CSV (written in chunks: the generator's memory stays small too)."""
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("id, Email ,Full Name,signup,amount,active,country\n")
        chunk: list[str] = []
        for i in range(1, rows + 1):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            email = f"{first}.{last}{i}@Example.COM"
            email = ("  " + email if i % 3 == 0 else email) + ("  " if i % 5 == 0 else "")
            day = 1 + i % 28
            month = 1 + i % 12
            signup = f"2023-{month:02d}-{day:02d}" if i % 2 else f"{day:02d}/{month:02d}/2023"
            amount = "" if i % 20 == 0 else f"{rnd.randrange(0, 10_000_000) / 100:.2f}"
            active = ("true", "false", "TRUE", "", "False")[i % 5]
            ident = f"x{i}" if i % 1999 == 0 else str(i)
            if i % 997 == 0:
                chunk.append(f"{ident},{email},{first} {last}\n")
            else:
                chunk.append(f'{ident},{email},"{first} {last}",{signup},{amount},{active},{rnd.choice(COUNTRIES)}\n')
            if len(chunk) >= 50_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))


PANDAS = r"""
import json, sys, pandas as pd
src, dst = sys.argv[1], sys.argv[2]
NULLS = json.loads(sys.argv[3])
df = pd.read_csv(src, dtype=str, keep_default_na=False, on_bad_lines="skip", engine="c")
df.columns = ["id", "email", "full_name", "signup", "amount", "active", "country"]
for c in df.columns:
    df[c] = df[c].str.strip()
    df.loc[df[c].isin(NULLS), c] = None
ident = pd.to_numeric(df["id"], errors="coerce").astype("Int64")
email = df["email"].str.lower()
d1 = pd.to_datetime(df["signup"], format="%Y-%m-%d", errors="coerce")
d2 = pd.to_datetime(df["signup"], format="%d/%m/%Y", errors="coerce")
signup = d1.fillna(d2).dt.date
amount = pd.to_numeric(df["amount"], errors="coerce").round(2)
active = df["active"].str.lower().map({"true": True, "false": False})
bad = ident.isna() | email.isna() | (df["signup"].notna() & signup.isna()) | \
      (df["amount"].notna() & amount.isna()) | (df["active"].notna() & active.isna())
out = pd.DataFrame({"id": ident, "email": email, "full_name": df["full_name"], "signup": signup,
                    "amount": amount, "active": active.astype("boolean"), "country": df["country"]})
df[bad].to_json(dst + ".rejects.jsonl", orient="records", lines=True)
out[~bad].to_parquet(dst, compression="zstd", index=False)
"""

DUCKDB = r"""
import json, sys, duckdb
src, dst = sys.argv[1], sys.argv[2]
nulls = ", ".join("'" + n + "'" for n in json.loads(sys.argv[3]))
con = duckdb.connect()
con.execute(f"CREATE MACRO nz(x) AS CASE WHEN trim(x) IN ({nulls}) THEN NULL ELSE trim(x) END")
con.execute(f'''
COPY (
  WITH raw AS (
    SELECT nz(id) AS id, nz(email) AS email, nz(full_name) AS full_name, nz(signup) AS signup,
           nz(amount) AS amount, lower(nz(active)) AS active, nz(country) AS country
    FROM read_csv('{src}', all_varchar=true, header=true, ignore_errors=true,
                  names=['id', 'email', 'full_name', 'signup', 'amount', 'active', 'country'])
  ), typed AS (
    SELECT TRY_CAST(id AS BIGINT) AS id_v, lower(email) AS email_v, full_name,
           COALESCE(TRY_STRPTIME(signup, '%Y-%m-%d'), TRY_STRPTIME(signup, '%d/%m/%Y'))::DATE AS signup_v,
           TRY_CAST(amount AS DECIMAL(12,2)) AS amount_v,
           CASE active WHEN 'true' THEN true WHEN 'false' THEN false END AS active_v,
           country, signup, amount, active
    FROM raw
  )
  SELECT id_v AS id, email_v AS email, full_name, signup_v AS signup, amount_v AS amount,
         active_v AS active, country
  FROM typed
  WHERE id_v IS NOT NULL AND email_v IS NOT NULL AND (signup IS NULL OR signup_v IS NOT NULL)
    AND (amount IS NULL OR amount_v IS NOT NULL) AND (active IS NULL OR active_v IS NOT NULL)
) TO '{dst}' (FORMAT parquet, COMPRESSION zstd)
''')
"""

POLARS = r"""
import json, sys, polars as pl
src, dst = sys.argv[1], sys.argv[2]
NULLS = json.loads(sys.argv[3])
names = ["id", "email", "full_name", "signup", "amount", "active", "country"]
raw = pl.scan_csv(src, has_header=True, new_columns=names, infer_schema=False, truncate_ragged_lines=True,
                  empty_string_is_null=False)
def nz(c):
    t = pl.col(c).str.strip_chars()
    return pl.when(t.is_in(NULLS)).then(None).otherwise(t).alias(c)
# a ragged row is read with its missing fields as nulls: it is told apart by a missing last field
clean = raw.with_columns(pl.col("country").is_null().alias("_ragged")).with_columns([nz(c) for c in names])
signup = pl.coalesce(pl.col("signup").str.to_date("%Y-%m-%d", strict=False),
                     pl.col("signup").str.to_date("%d/%m/%Y", strict=False))
typed = clean.with_columns(
    pl.col("id").cast(pl.Int64, strict=False).alias("id_v"), pl.col("email").str.to_lowercase().alias("email_v"),
    signup.alias("signup_v"), pl.col("amount").cast(pl.Decimal(12, 2), strict=False).alias("amount_v"),
    pl.col("active").str.to_lowercase().replace_strict({"true": True, "false": False}, default=None,
                                                        return_dtype=pl.Boolean).alias("active_v"))
ok = (~pl.col("_ragged") & pl.col("id_v").is_not_null() & pl.col("email_v").is_not_null()
      & (pl.col("signup").is_null() | pl.col("signup_v").is_not_null())
      & (pl.col("amount").is_null() | pl.col("amount_v").is_not_null())
      & (pl.col("active").is_null() | pl.col("active_v").is_not_null()))
typed.filter(ok).select(pl.col("id_v").alias("id"), pl.col("email_v").alias("email"), "full_name",
                        pl.col("signup_v").alias("signup"), pl.col("amount_v").alias("amount"),
                        pl.col("active_v").alias("active"), "country").sink_parquet(dst, compression="zstd")
"""

RSS_WRAPPER = ("import resource, subprocess, sys\n"
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak_rss_mb(argv: list[str], setup: object = None) -> float:
    """Max RSS of one run of ``argv``, measured by a fresh wrapper (its only child)."""
    if callable(setup):
        setup()
    out = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *argv], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=4, help="the larger file for the RSS check (x rows; 0: none)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--skip", action="append", default=[], help="leave a contender out (e.g. pandas)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-parquet-"))
    root = work / "mount"
    (root / "ingest").mkdir(parents=True, exist_ok=True)
    src = root / "ingest" / "messy.csv"
    big = root / "ingest" / "messy-big.csv"
    for path, rows in ((src, args.rows), (big, args.rows * args.scale))[:2 if args.scale else 1]:
        if not path.exists():
            started = time.perf_counter()
            generate(path, rows)
            print(f"generated {path.name}: {rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        (path.parent / (path.name + ".schema.json")).write_text(json.dumps(CONTRACT))
    out = work / "out"
    out.mkdir(exist_ok=True)
    workspace = root / "workspace"

    def clean() -> None:
        shutil.rmtree(workspace, ignore_errors=True)
        for p in out.iterdir():
            p.unlink()

    def worker(name: str) -> list[str]:
        return [sys.executable, "-m", "workers", "run", "parquet-normalize", f"ingest/{name}", "--root", str(root),
                "--no-isolation"]

    pandas_cmd = [sys.executable, "-c", PANDAS, str(src), str(out / "pandas.parquet"), json.dumps(NULLS)]
    duckdb_cmd = [sys.executable, "-c", DUCKDB, str(src), str(out / "duckdb.parquet"), json.dumps(NULLS)]
    polars_cmd = [sys.executable, "-c", POLARS, str(src), str(out / "polars.parquet"), json.dumps(NULLS)]
    env = {"PYTHONPATH": str(REPO)}
    contenders = [
        Contender("duckdb", duckdb_cmd, setup=clean, note=f"{_version('duckdb')}, COPY ... FORMAT parquet"),
        Contender("worker", worker(src.name), setup=clean, env=env, note="parquet-normalize"),
        Contender("polars", polars_cmd, setup=clean, note=f"{_version('polars')}, scan_csv + sink_parquet"),
        Contender("pandas", pandas_cmd, setup=clean, note=f"{_version('pandas')}, read_csv + to_parquet"),
    ]
    contenders = [c for c in contenders if c.name not in args.skip]
    print(f"machine: {machine()}; load before: {load()}", file=sys.stderr)
    before = load()
    anchor = contenders[0].name  # duckdb unless it was skipped
    results = compare(contenders, anchor=anchor, repeats=args.repeat, units=args.rows, unit_name="rows")
    os.environ["PYTHONPATH"] = str(REPO)
    rss = {c.name: peak_rss_mb(list(c.run), clean) for c in contenders}  # type: ignore[arg-type]
    rss_big = peak_rss_mb(worker(big.name), clean) if args.scale else 0.0
    after = load()
    clean()
    subprocess.run(worker(src.name), check=True, capture_output=True, env={**os.environ, **env})
    manifest = json.loads(next(workspace.rglob("manifest.json")).read_text())
    rows = manifest["facts"]["rows"]

    print()
    print(f"Input: {args.rows:,} rows, {src.stat().st_size / 2**20:.0f} MiB; worker rows in/out/rejected: "
          f"{rows['in']:,}/{rows['out']:,}/{rows['rejected']:,}")
    print(f"Machine: {machine()}; load average before {before}, after {after}")
    print()
    print(results.markdown())
    print()
    print("| contender | peak RSS MB |")
    print("|---|---:|")
    for name, mb in rss.items():
        print(f"| {name} | {mb:.0f} |")
    if args.scale:
        print(f"| worker, {args.scale}x rows ({big.stat().st_size / 2**20:.0f} MiB) | {rss_big:.0f} |")
    print()
    ratio = results.ratio("worker")
    size_mb = src.stat().st_size / 1e6
    print(f"worker / {anchor} wall time: {ratio:.2f}x; worker peak RSS {rss['worker']:.0f} MB (target < 256 MB); "
          f"worker throughput {size_mb / results['worker'].median:.1f} MB/s of CSV")
    if any(t.name == "polars" for t in results.timings):
        print(f"worker / polars wall time: {results.ratio('worker', 'polars'):.2f}x, paired "
              f"{results.paired('worker', 'polars'):.2f}x (target <= 1.00x)")
    if args.scale:
        print(f"{args.scale}x file: {rss_big / rss['worker'] - 1:+.1%} peak RSS (target within 10%)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _version(module: str) -> str:
    try:
        return f"{module} {__import__(module).__version__}"
    except ImportError:
        return f"{module} missing"


if __name__ == "__main__":
    raise SystemExit(main())
