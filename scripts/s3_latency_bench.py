"""The delta-rs side and the table set-up of scripts/s3-latency-bench.sh.

    s3_latency_bench.py make-w1 URI FILES       FILES appends of 2,000 events, one day each over 10 days
    s3_latency_bench.py make-w2 URI SOURCE      10 days of 20,000 orders (one file a day); SOURCE: a
                                                parquet upsert of 3,000 of the newest 3 days' orders and
                                                300 new ones
    s3_latency_bench.py copy SRC_URI DST_URI    server-side copy of a table's objects
    s3_latency_bench.py optimize URI TASKS      delta-rs compaction (TASKS = max_concurrent_tasks, 0: its default)
    s3_latency_bench.py merge URI SOURCE        delta-rs upsert of SOURCE by order_id
    s3_latency_bench.py rows URI                row count and a checksum of the table (to compare engines)

The endpoint and keys come from the AWS_* variables (scripts/s3-env.sh sets them).
Timings are taken by the calling script, around the whole process.
"""

import datetime
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

DAYS = 10
FIRST_DAY = datetime.date(2024, 5, 1)


def storage_options():
    return {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }


def mix(x, salt):
    x = (x * 0x9E3779B97F4A7C15 + salt * 0xD6E8FEB86659FD93) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF


def events(start, rows, day):
    ids = list(range(start, start + rows))
    date = FIRST_DAY + datetime.timedelta(days=day)
    midnight = datetime.datetime(date.year, date.month, date.day, tzinfo=datetime.timezone.utc)
    types = ["view", "click", "add_to_cart", "purchase", "refund"]
    return pa.table(
        {
            "event_id": pa.array(ids, pa.int64()),
            "user_id": pa.array([mix(i, 1) % 1_000_000 for i in ids], pa.int64()),
            "event_type": pa.array([types[mix(i, 2) % 5] for i in ids]),
            "event_time": pa.array(
                [midnight + datetime.timedelta(seconds=mix(i, 3) % 86_400) for i in ids],
                pa.timestamp("us", tz="UTC"),
            ),
            "amount": pa.array([(mix(i, 4) % 100_000) / 100.0 for i in ids], pa.float64()),
            "payload": pa.array(['{"s":%d}' % (mix(i, 5) % 100_000) for i in ids]),
            "event_date": pa.array([date] * rows, pa.date32()),
        }
    )


def orders(start, rows, day, status="placed"):
    ids = list(range(start, start + rows))
    date = FIRST_DAY + datetime.timedelta(days=day)
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "customer_id": pa.array([mix(i, 1) % 100_000 for i in ids], pa.int64()),
            "status": pa.array([status] * rows),
            "amount": pa.array([(mix(i, 4) % 100_000) / 100.0 for i in ids], pa.float64()),
            "order_date": pa.array([date] * rows, pa.date32()),
        }
    )


def make_w1(uri, files):
    for n in range(files):
        day = n * DAYS // files
        write_deltalake(
            uri, events(n * 2_000, 2_000, day), mode="append", partition_by=["event_date"],
            storage_options=storage_options(),
        )


def make_w2(uri, source):
    per_day = 20_000
    for day in range(DAYS):
        write_deltalake(
            uri, orders(day * per_day, per_day, day), mode="append", partition_by=["order_date"],
            storage_options=storage_options(),
        )
    parts = []
    for day in range(DAYS - 3, DAYS):
        parts.append(orders(day * per_day + 7, 1_000, day, status="shipped"))
    parts.append(orders(DAYS * per_day, 300, DAYS - 1))
    pq.write_table(pa.concat_tables(parts), source)


def copy(src, dst):
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    bucket, _, src_prefix = src.removeprefix("s3://").partition("/")
    dst_bucket, _, dst_prefix = dst.removeprefix("s3://").partition("/")
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=src_prefix.rstrip("/") + "/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            target = dst_prefix.rstrip("/") + key[len(src_prefix.rstrip("/")):]
            client.copy_object(Bucket=dst_bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})


def optimize(uri, tasks):
    table = DeltaTable(uri, storage_options=storage_options())
    kwargs = {"target_size": 128 * 1024 * 1024}
    if tasks > 0:
        kwargs["max_concurrent_tasks"] = tasks
    metrics = table.optimize.compact(**kwargs)
    print(f"delta-rs: {metrics['numFilesRemoved']} files removed, {metrics['numFilesAdded']} added")


def merge(uri, source):
    table = DeltaTable(uri, storage_options=storage_options())
    metrics = (
        table.merge(pq.read_table(source), predicate="t.order_id = s.order_id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    print(
        f"delta-rs: {metrics['num_target_rows_updated']} updated, {metrics['num_target_rows_inserted']} inserted, "
        f"{metrics['num_target_files_removed']} files removed"
    )


def rows(uri):
    import hashlib

    data = DeltaTable(uri, storage_options=storage_options()).to_pyarrow_table()
    columns = sorted(data.column_names)
    lines = sorted(repr([row[c] for c in columns]) for row in data.to_pylist())
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    print(f"{data.num_rows} rows, checksum {digest}")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "make-w1":
        make_w1(args[0], int(args[1]))
    elif command == "make-w2":
        make_w2(args[0], args[1])
    elif command == "copy":
        copy(args[0], args[1])
    elif command == "optimize":
        optimize(args[0], int(args[1]))
    elif command == "merge":
        merge(args[0], args[1])
    elif command == "rows":
        rows(args[0])
    else:
        sys.exit(__doc__)
    # The deltalake wheel can abort in its native teardown at interpreter exit after
    # a correct run: skip it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
