"""``stormfusion download`` against a real S3 endpoint on loopback (moto's threaded server).

The server holds the tiny synthetic twin (bucket ``twin``) and a one-event twin at full size
(bucket ``big``) whose 7.2 MB VIL file is uploaded in 5 MiB parts, so its ETag is a
multipart one. Objects are ``public-read``: the downloads are anonymous, like the real
bucket's. A throttling TCP relay in front of the server slows transfers down enough to kill a
download midway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from stormfusion.cli import main
from stormfusion.data.download import (
    RemoteObject,
    S3Options,
    bucket_region,
    candidate_part_sizes,
    download_catalog,
    download_events,
    download_keys,
    event_keys,
    file_etags,
    verify_file,
)
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.synthetic import synthesize_archive
from stormfusion.errors import StormFusionError
from stormfusion.testing import (
    ThrottledRelay,
    archive_files,
    free_port,
    loopback_client,
    loopback_s3,
    upload_public,
)

REPO = Path(__file__).resolve().parents[1]
PART = 5 * 1024 * 1024
BIG_KEY = "data/vil/2018/SEVIR_VIL_STORMEVENTS_2018_0701_1231.h5"


def _upload_tree(client: object, bucket: str, root: Path) -> dict[str, Path]:
    """Upload every file of the twin under ``root`` as public-read objects."""
    keys = archive_files(root)
    upload_public(client, bucket, keys, PART)
    return keys


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, synthetic_archive: Path) -> Iterator[dict]:
    """The loopback S3 server with buckets ``twin`` and ``big``."""
    with loopback_s3() as (endpoint, port):
        client = loopback_client(endpoint)
        client.create_bucket(Bucket="twin")
        client.create_bucket(Bucket="big")
        twin_keys = _upload_tree(client, "twin", synthetic_archive)
        big_root = tmp_path_factory.mktemp("big_twin")
        synthesize_archive(big_root, n_storm=1, n_random=0, image_size=384, seed=3)
        big_keys = _upload_tree(client, "big", big_root)
        yield {
            "endpoint": endpoint,
            "port": port,
            "client": client,
            "twin": twin_keys,
            "big": big_keys,
            "big_root": big_root,
        }


def _opts(s3: dict, bucket: str = "twin", **kw: object) -> S3Options:
    base = {
        "bucket": bucket,
        "endpoint_url": s3["endpoint"],
        "retries": 1,
        "backoff_s": 0.05,
        "chunk_size": PART,
    }
    base.update(kw)
    return S3Options(**base)  # type: ignore[arg-type]


def _cli(s3_endpoint: str, *args: str) -> int:
    return main(
        [
            "download",
            "--region",
            "us-east-1",
            "--retries",
            "0",
            "--endpoint-url",
            s3_endpoint,
            *args,
        ]
    )


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# -- ETag arithmetic (known answers) ---------------------------------------------------------


def test_multipart_etag_known_answer(tmp_path: Path) -> None:
    data = b"abcdefghij"  # parts of 4 bytes: abcd, efgh, ij
    path = tmp_path / "f"
    path.write_bytes(data)
    parts = [hashlib.md5(p, usedforsecurity=False).digest() for p in (b"abcd", b"efgh", b"ij")]
    expected = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + "-3"
    md5, etags = file_etags(path, [4, 5])
    assert md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert etags[4] == expected
    assert etags[5].endswith("-2")
    assert verify_file(path, RemoteObject("k", 10, expected)) is None
    assert "matches no part size" in str(verify_file(path, RemoteObject("k", 10, "0" * 32 + "-2")))
    assert "size" in str(verify_file(path, RemoteObject("k", 11, md5)))
    assert "MD5" in str(verify_file(path, RemoteObject("k", 10, "0" * 32)))


def test_candidate_part_sizes() -> None:
    mib = 1 << 20
    obj = RemoteObject("k", 20 * mib + 5, "x-3")  # 3 parts: part size in [6.67, 10] MiB
    sizes = candidate_part_sizes(obj, 8 * mib)
    assert sizes[0] == 8 * mib
    assert set(sizes) == {7 * mib, 8 * mib, 9 * mib, 10 * mib}
    assert candidate_part_sizes(RemoteObject("k", 10, "x-3", part_size=4), 8 * mib)[0] == 4
    assert candidate_part_sizes(RemoteObject("k", 10, "abc"), 8 * mib) == []


# -- downloads from the loopback server ------------------------------------------------------


def test_catalog_only(s3: dict, tmp_path: Path, synthetic_archive: Path) -> None:
    out = tmp_path / "raw"
    assert _cli(s3["endpoint"], "--bucket", "twin", "--out", str(out), "--catalog-only") == 0
    assert (out / "CATALOG.csv").read_bytes() == (synthetic_archive / "CATALOG.csv").read_bytes()
    assert not list(out.glob(".*part-*"))


def test_event_files_verified_and_skipped_on_rerun(
    s3: dict, tmp_path: Path, synthetic_archive: Path
) -> None:
    out = tmp_path / "raw"
    meta = tmp_path / "events"
    assert _cli(s3["endpoint"], "--bucket", "twin", "--out", str(out), "--catalog-only") == 0
    run_selection(
        out / "CATALOG.csv",
        SelectionOptions(kind="all"),
        meta / "events.csv",
        meta / "events.json",
        data_root=out,
    )
    keys = event_keys(meta / "events.csv")
    assert keys and all(k.startswith("data/") for k in keys)
    manifest = tmp_path / "manifest.json"
    code = _cli(
        s3["endpoint"],
        "--bucket",
        "twin",
        "--out",
        str(out),
        "--events",
        str(meta / "events.csv"),
        "--manifest",
        str(manifest),
        "--concurrency",
        "4",
    )
    assert code == 0
    record = json.loads(manifest.read_text())
    assert [f["key"] for f in record["files"]] == keys
    for entry in record["files"]:
        local = out / entry["key"]
        assert local.read_bytes() == (synthetic_archive / entry["key"]).read_bytes()
        assert entry["size"] == local.stat().st_size
        assert entry["etag"] == _md5(local)  # single-part objects: ETag = MD5
        assert entry["status"] == "downloaded"
    # the index names exactly the files its events live in: nothing else was fetched
    fetched = {p.relative_to(out).as_posix() for p in (out / "data").rglob("*.h5")}
    assert fetched == set(keys)
    # a rerun skips complete files; a damaged local file is fetched again
    victim = out / keys[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    again = download_events(_opts(s3), meta / "events.csv", out)
    status = {f["key"]: f["status"] for f in again["files"]}
    assert status[keys[0]] == "downloaded"
    assert all(s == "skipped" for k, s in status.items() if k != keys[0])
    assert victim.read_bytes() == (synthetic_archive / keys[0]).read_bytes()


def test_multipart_object_verified(s3: dict, tmp_path: Path) -> None:
    head = s3["client"].head_object(Bucket="big", Key=BIG_KEY)
    assert head["ETag"].strip('"').endswith("-2")  # 7.2 MB in 5 MiB parts
    out = tmp_path / "raw"
    # a transfer configuration with another part size must still verify the ETag
    [entry] = download_keys(_opts(s3, "big", chunk_size=8 << 20, concurrency=8), [BIG_KEY], out)
    assert entry["etag"].endswith("-2")
    assert (out / BIG_KEY).read_bytes() == s3["big"][BIG_KEY].read_bytes()


def test_kill_midway_then_rerun_gives_identical_files(s3: dict, tmp_path: Path) -> None:
    relay = ThrottledRelay(("127.0.0.1", s3["port"]), bytes_per_s=2e6)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    out = tmp_path / "raw"
    target = out / BIG_KEY
    try:
        cmd = [
            sys.executable,
            "-m",
            "stormfusion",
            "download",
            "--bucket",
            "big",
            "--endpoint-url",
            f"http://127.0.0.1:{relay.server_address[1]}",
            "--retries",
            "0",
            "--out",
            str(out),
            "--concurrency",
            "2",
            "--catalog-only",
        ]
        # fetch the big VIL file through the slow relay: use an index naming only it
        events = tmp_path / "events.csv"
        events.write_text(
            "id,time_utc,event_type,episode_id,event_id,kind,vil_file,vil_index,vil_size\n"
            f"S1,2018-07-01 00:00:00,Hail,1,1,storm,{BIG_KEY.removeprefix('data/')},0,384\n"
        )
        cmd[cmd.index("--catalog-only")] = "--events"
        cmd.append(str(events))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        partial: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            partial = (
                [p for p in target.parent.glob(".*part-*") if p.stat().st_size > 0]
                if (target.parent.is_dir())
                else []
            )
            if partial:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the download finished before it could be killed"
        assert partial, "no bytes reached the disk"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        relay.shutdown()
        relay.server_close()
    assert not target.exists()  # only a temporary was left
    assert list(target.parent.glob(".*part-*"))
    [entry] = download_keys(_opts(s3, "big"), [BIG_KEY], out)
    assert entry["status"] == "downloaded"
    assert target.read_bytes() == s3["big"][BIG_KEY].read_bytes()
    assert not list(target.parent.glob(".*part-*"))  # the stale temporary was removed


# -- bad input: one clear error, exit 2, no partial output -----------------------------------


def test_unreachable_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    out = tmp_path / "raw"
    assert (
        _cli(f"http://127.0.0.1:{port}", "--bucket", "twin", "--out", str(out), "--catalog-only")
        == 2
    )
    err = capsys.readouterr().err
    assert "cannot reach the S3 endpoint" in err and str(port) in err
    assert not (out / "CATALOG.csv").exists()


def test_missing_bucket(s3: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _cli(s3["endpoint"], "--bucket", "no-such-bucket", "--out", str(tmp_path), "--catalog-only")
        == 2
    )
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err


def test_missing_object(s3: dict, tmp_path: Path) -> None:
    with pytest.raises(StormFusionError, match=r"s3://twin/data/vil/nope\.h5: no such object"):
        download_keys(_opts(s3), ["data/vil/nope.h5"], tmp_path)


def test_private_object_refused_to_anonymous_requests(s3: dict, tmp_path: Path) -> None:
    s3["client"].put_object(Bucket="twin", Key="private.csv", Body=b"x")  # no public-read
    with pytest.raises(StormFusionError, match=r"s3://twin/private\.csv: access denied"):
        download_keys(_opts(s3), ["private.csv"], tmp_path)
    assert not (tmp_path / "private.csv").exists()


def test_corrupt_object_is_deleted_retried_and_named(s3: dict, tmp_path: Path) -> None:
    """The server's bytes no longer match its ETag (bit rot): fail by name, leave nothing."""
    from botocore.config import Config
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    key = "CATALOG.csv"
    client = boto3.client(  # no flexible checksum stored with the object: only the ETag
        "s3",
        endpoint_url=s3["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(request_checksum_calculation="when_required"),
    )
    client.create_bucket(Bucket="rotten")
    client.put_object(Bucket="rotten", Key=key, Body=b"id,file_name\nS1,a.h5\n", ACL="public-read")
    fake = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets["rotten"].keys[key]
    etag = fake.etag  # computed from the original bytes and kept
    fake.value = b"id,file_name\nS1,b.h5\n"  # same size, other bytes
    assert fake.etag == etag
    with pytest.raises(StormFusionError, match=r"CATALOG\.csv: verification failed: MD5"):
        download_keys(_opts(s3, "rotten", retries=1), [key], tmp_path)
    assert not (tmp_path / key).exists()
    assert not list(tmp_path.glob(".*part-*"))


def test_event_index_path_escape_refused(s3: dict, tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "id,time_utc,event_type,episode_id,event_id,kind,vil_file,vil_index,vil_size\n"
        "S1,2019-07-01 00:00:00,Hail,1,1,storm,../../etc/passwd,0,384\n"
    )
    with pytest.raises(StormFusionError, match="escapes the data root"):
        download_events(_opts(s3), events, tmp_path / "raw")


# -- the bucket's region -----------------------------------------------------------------------


def test_region_named_by_the_bucket_is_used(
    s3: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    west = boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    west.create_bucket(
        Bucket="west-twin", CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    catalog = s3["twin"]["CATALOG.csv"]
    upload_public(west, "west-twin", {"CATALOG.csv": catalog}, PART)
    # the server answers an unsigned HEAD of the bucket with the region header
    opts = _opts(s3, "west-twin", region="eu-central-1")
    assert bucket_region(opts) == "us-west-2"
    assert bucket_region(_opts(s3, "twin")) == "us-east-1"
    assert bucket_region(_opts(s3, "no-such-bucket")) is None
    assert S3Options().region == "us-west-2"  # the default is the registry's region
    with caplog.at_level(logging.INFO, logger="stormfusion.data.download"):
        entry = download_catalog(opts, tmp_path / "raw")
    assert entry["status"] == "downloaded"
    assert "names region us-west-2 (configured: eu-central-1)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stormfusion.data.download"):
        download_catalog(_opts(s3, "west-twin", region="us-west-2"), tmp_path / "raw2")
    assert "names region" not in caplog.text  # no log when configured right


# -- progress, stalls, truncation, links -------------------------------------------------------


def _relay(s3: dict, **kw: object) -> ThrottledRelay:
    relay = ThrottledRelay(("127.0.0.1", s3["port"]), **kw)  # type: ignore[arg-type]
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    return relay


def test_stalled_server_named_with_key_timeout_and_wait(s3: dict, tmp_path: Path) -> None:
    relay = _relay(s3, cut_after=200_000, stall=True)
    endpoint = f"http://127.0.0.1:{relay.server_address[1]}"
    try:
        opts = _opts(s3, "big", endpoint_url=endpoint, retries=0, read_timeout_s=0.5)
        with pytest.raises(StormFusionError) as info:
            download_keys(opts, [BIG_KEY], tmp_path / "raw")
    finally:
        relay.shutdown()
        relay.server_close()
    msg = str(info.value)
    assert BIG_KEY in msg and "stalled" in msg and "read timeout of 0.5 s" in msg
    assert re.search(r"after waiting \d+\.\d s", msg)
    assert "Max Retries" not in msg
    assert not (tmp_path / "raw" / BIG_KEY).exists()


def test_truncated_transfer_named_as_such(s3: dict, tmp_path: Path) -> None:
    relay = _relay(s3, cut_after=200_000, stall=False)
    endpoint = f"http://127.0.0.1:{relay.server_address[1]}"
    try:
        with pytest.raises(StormFusionError, match="truncated transfer") as info:
            download_keys(_opts(s3, "big", endpoint_url=endpoint, retries=0), [BIG_KEY], tmp_path)
    finally:
        relay.shutdown()
        relay.server_close()
    assert BIG_KEY in str(info.value)
    assert not (tmp_path / BIG_KEY).exists()
    assert not list((tmp_path / BIG_KEY).parent.glob(".*part-*"))


def _complete_temporary(out: Path, key: str, source: Path) -> bool:
    """Whether a kill left a temporary of ``key`` holding all of its bytes."""
    target = out / key
    size = source.stat().st_size
    return any(p.stat().st_size == size for p in target.parent.glob(f".{target.name}.part-*"))


def test_kill_at_random_keeps_every_finished_file(s3: dict, tmp_path: Path) -> None:
    """Files are renamed as they complete: a kill loses only the file in flight."""
    keys = sorted(k for k in s3["twin"] if k.startswith("data/"))
    total = sum(s3["twin"][k].stat().st_size for k in keys)
    rate = total / 6.0  # about 6 s for everything, one connection at a time
    relay = _relay(s3, bytes_per_s=rate)
    out = tmp_path / "raw"
    events = tmp_path / "keys.txt"
    events.write_text("\n".join(keys))
    code = (
        "from stormfusion.data.download import S3Options, download_keys;"
        f"download_keys(S3Options(bucket='twin', region='us-east-1', "
        f"endpoint_url='http://127.0.0.1:{relay.server_address[1]}', concurrency=1, retries=0),"
        f" open({str(events)!r}).read().split(), {str(out)!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
        finished: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            finished = [k for k in keys if (out / k).is_file()]
            if finished:
                break
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.5))  # then kill at a random moment
        assert proc.poll() is None, "the download finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        relay.shutdown()
        relay.server_close()
    kept = [k for k in keys if (out / k).is_file()]
    assert finished and set(finished) <= set(kept) and len(kept) < len(keys)
    for key in kept:  # every file under its final name is complete and right
        assert (out / key).read_bytes() == s3["twin"][key].read_bytes()
    # A kill between a file's last byte and its rename leaves a complete temporary, which the
    # rerun verifies and promotes rather than fetching again.
    promoted = {k for k in keys if k not in kept and _complete_temporary(out, k, s3["twin"][k])}
    entries = download_keys(_opts(s3), keys, out)
    status = {e["key"]: e["status"] for e in entries}
    assert all(status[k] == "skipped" for k in {*kept, *promoted})  # progress kept
    assert all(status[k] == "downloaded" for k in keys if k not in {*kept, *promoted})
    for key in keys:
        assert (out / key).read_bytes() == s3["twin"][key].read_bytes()
    assert not list(out.rglob(".*part-*"))


def test_complete_temporary_is_promoted_not_deleted(s3: dict, tmp_path: Path) -> None:
    key = "CATALOG.csv"
    out = tmp_path / "raw"
    out.mkdir()
    left = out / f".{key}.part-0123abcd"  # complete: killed between last byte and rename
    left.write_bytes(s3["twin"][key].read_bytes())
    broken = out / f".{key}.part-89abcdef"  # incomplete
    broken.write_bytes(s3["twin"][key].read_bytes()[:100])
    [entry] = download_keys(_opts(s3), [key], out)
    assert entry["status"] == "skipped"
    assert (out / key).read_bytes() == s3["twin"][key].read_bytes()
    assert not left.exists() and not broken.exists()


def test_download_refuses_a_link_leaving_the_root(s3: dict, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "raw"
    out.mkdir()
    (out / "data").symlink_to(outside, target_is_directory=True)
    key = next(k for k in s3["twin"] if k.startswith("data/"))
    with pytest.raises(StormFusionError, match="outside the output root"):
        download_keys(_opts(s3), [key], out)
    assert not any(outside.rglob("*"))
