"""Where checkpoints, sweeps and datasets live: a local path, or a URI every node of a cluster reaches.

A location is a plain string, as it appears in a config or on the command line:

    runs/train                                  a local (or NFS) path, resolved against the cwd
    s3://bucket/train                           AWS S3, credentials from the usual AWS env / instance role
    s3://bucket/train?endpoint_override=host:8333&scheme=http   any S3-compatible store (SeaweedFS, MinIO)
    gs://bucket/train                           Google Cloud Storage

`pyarrow.fs` opens it (the same library Ray Train and Ray Data use), so one string means one place for
this package, Ray Train's `storage_path` / `storage_filesystem` and Ray Data. Errors name the setting
they came from (`setting=...`) and the fix.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

# The install hint for a scheme pyarrow cannot open (its wheels carry S3 and GCS; HDFS needs libhdfs).
SCHEME_HINTS = {
    "s3": "pyarrow's PyPI wheel has S3 built in: reinstall it (`pip install --force-reinstall pyarrow`)",
    "gs": "pyarrow's PyPI wheel has GCS built in: reinstall it (`pip install --force-reinstall pyarrow`)",
    "hdfs": "install Hadoop's libhdfs and set HADOOP_HOME / ARROW_LIBHDFS_DIR on every node",
}


class StorageError(ValueError):
    """A storage location that cannot work; the message names the setting and the fix."""


def is_uri(location: str | Path) -> bool:
    """True for `scheme://...` (s3, gs, hdfs, ...); False for a local or NFS path (file:// included)."""
    scheme = urlsplit(str(location)).scheme
    return len(scheme) > 1 and scheme != "file"  # len > 1: a Windows drive letter is no scheme


def local_path(location: str | Path) -> Path:
    """The absolute local path of a non-URI location (`file:///x` or `x`)."""
    text = str(location)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser().resolve()


def resolve(location: str | Path, setting: str):
    """(pyarrow FileSystem, path inside it) for `location`; raises StorageError naming `setting`.

    >>> resolve("runs/x", "storage_path")[0].type_name
    'local'
    """
    import pyarrow  # heavy: off the CLI's start-up path
    from pyarrow import fs  # heavy: off the CLI's start-up path

    if not is_uri(location):
        return fs.LocalFileSystem(), str(local_path(location))
    scheme = urlsplit(str(location)).scheme
    try:
        return fs.FileSystem.from_uri(str(location))
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, ImportError, OSError) as err:
        hint = SCHEME_HINTS.get(scheme, "use s3://, gs:// or a path on shared storage (NFS)")
        raise StorageError(f"{setting}={location}: no filesystem for {scheme}:// in this pyarrow ({err}); "
                           f"{hint}") from None


def join(location: str | Path, *parts: str) -> str:
    """`location` with path parts appended, keeping a URI's query (endpoint_override=...) at the end.

    >>> join("s3://b/train?scheme=http", "run", "x")
    's3://b/train/run/x?scheme=http'
    """
    text = str(location)
    if not is_uri(text):
        return str(Path(text, *parts))
    base, _, query = text.partition("?")
    joined = posixpath.join(base, *parts)
    return f"{joined}?{query}" if query else joined


def check_reachable(location: str | Path, setting: str) -> None:
    """Fail now, not after training, if a URI's bucket is missing or its store does not answer."""
    from pyarrow import fs  # heavy: off the CLI's start-up path

    if not is_uri(location):
        return
    filesystem, path = resolve(location, setting)
    bucket = path.split("/", 1)[0]
    try:
        info = filesystem.get_file_info(bucket)
    except OSError as err:  # connection refused, access denied, bad endpoint
        raise StorageError(f"{setting}={location}: the store does not answer ({err}); check the endpoint "
                           "(endpoint_override=... in the URI, or AWS_ENDPOINT_URL) and the credentials "
                           "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)") from None
    if info.type == fs.FileType.NotFound:
        create = {"s3": f"aws s3 mb s3://{bucket}", "gs": f"gcloud storage buckets create gs://{bucket}"}
        how = create.get(urlsplit(str(location)).scheme, "your store's own tool")
        raise StorageError(f"{setting}={location}: bucket {bucket!r} does not exist; create it ({how}) "
                           f"or point {setting} at an existing bucket")


def ray_storage(location: str | Path, setting: str = "storage_path") -> dict:
    """Keyword arguments for Ray's RunConfig: a local path as an absolute path, a URI as its filesystem
    and the path inside it (so that endpoint_override and credentials reach every worker)."""
    if not is_uri(location):
        return {"storage_path": str(local_path(location))}
    filesystem, path = resolve(location, setting)
    return {"storage_path": path, "storage_filesystem": filesystem}


def check_shared(location: str | Path, setting: str, fix: str | None = None) -> None:
    """On a multi-node Ray cluster, fail if a local `location` is not visible from every node.

    A URI is shared by construction. A local path may be an NFS mount (fine) or a node's own disk
    (Ray Train then cannot restore a checkpoint on another node): write a marker file here and ask
    one zero-CPU task per other alive node whether it sees it (without a connected Ray: nothing). `fix` replaces
    the default advice (a URI or an NFS path) in the error.
    """
    import ray  # heavy: off the CLI's start-up path

    if is_uri(location) or not ray.is_initialized():
        return
    nodes = [n for n in ray.nodes() if n["Alive"]]
    here = ray.get_runtime_context().get_node_id()
    others = [n["NodeID"] for n in nodes if n["NodeID"] != here]
    if not others:
        return
    directory = local_path(location)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f".lookahead-shared-{uuid.uuid4().hex}"
    marker.write_text("written by lookahead_ray.storage.check_shared\n")
    try:
        blind = [node for node, seen in zip(others, ray.get([_sees().options(scheduling_strategy=_on(node)).remote(
            str(marker)) for node in others], timeout=120)) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        fix = fix or (f"set {setting} to storage every node sees: s3://<bucket>/<prefix>, gs://<bucket>/<prefix>, "
                      "or a path on an NFS mount present on every node")
        raise StorageError(f"{setting}={location}: {directory} is on this node's own disk and {len(blind)} of the "
                           f"cluster's {len(nodes)} nodes cannot see it (Ray Train and Tune run workers and restore "
                           f"checkpoints on any node); {fix}")


def _on(node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # heavy: off the CLI's start-up path

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def _sees_marker(path: str) -> bool:
    return Path(path).exists()


def _sees():
    """The marker check as a Ray task, built on first use (nothing Ray happens at import)."""
    import ray  # heavy: off the CLI's start-up path

    return ray.remote(num_cpus=0)(_sees_marker)


def copy_tree(source: str | Path, target: str | Path, setting: str) -> None:
    """Copy a folder between any two locations (local <-> s3:// / gs://), creating `target`."""
    from pyarrow import fs  # heavy: off the CLI's start-up path

    source_fs, source_path = resolve(source, setting)
    target_fs, target_path = resolve(target, setting)
    target_fs.create_dir(target_path, recursive=True)
    fs.copy_files(source_path, target_path, source_filesystem=source_fs, destination_filesystem=target_fs)


def exists(location: str | Path, setting: str) -> bool:
    from pyarrow import fs  # heavy: off the CLI's start-up path

    filesystem, path = resolve(location, setting)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def read_text(location: str | Path, setting: str) -> str | None:
    """A small file's text at any location (local, s3://, gs://); None when there is no such file."""
    if not exists(location, setting):
        return None
    filesystem, path = resolve(location, setting)
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def write_text(location: str | Path, text: str, setting: str) -> None:
    """Write a small file at any location, creating its folder."""
    filesystem, path = resolve(location, setting)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


@contextlib.contextmanager
def staged(location: str | Path, setting: str, upload: bool = True):
    """A local folder for a stage that writes plain files: `location` itself when local; for a URI a
    temporary copy of what is already there (so a resumable stage resumes), copied back on success.
    With upload=False it is a read-only download (an input folder)."""
    if not is_uri(location):
        yield str(location)
        return
    check_reachable(location, setting)
    with tempfile.TemporaryDirectory(prefix="lookahead-stage-") as folder:
        if exists(location, setting):
            copy_tree(location, folder, setting)
        yield folder
        if upload:
            copy_tree(folder, location, setting)
