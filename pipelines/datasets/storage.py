"""Where shards live: a local directory or an `s3://bucket/prefix` URI, behind one small API.

S3 goes through pyarrow's `S3FileSystem` (with an endpoint override for S3-compatible stores
such as MinIO or moto) and boto3 where a client is needed. Settings come from
`StorageOptions`, by default read from the standard AWS environment variables:
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION. Credentials left unset fall through to
the AWS SDK's own chain (config files, instance metadata).

Writes are atomic: a local file is written under a temporary name in its directory and
renamed; an S3 object is uploaded from a finished local file or from memory, and S3 makes
an object visible only once its (multipart) upload completes. Readers therefore never see
half a file. A killed local write leaves a hidden `.<name>.tmp-*` file, and a killed S3
upload an unfinished multipart upload; the next writer removes both (`remove_temp_files`).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Optional

import pyarrow.fs as pafs

from pipelines.atomic import TEMP_TAG, atomic_path

log = logging.getLogger(__name__)
S3_PREFIX = "s3://"
_COPY_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StorageOptions:
    """How to reach S3. All None means: the AWS SDK's defaults.

    Args:
        endpoint_url: e.g. "http://127.0.0.1:9000" for an S3-compatible server; None = AWS.
        region: bucket region, e.g. "us-east-1".
        access_key_id: AWS access key id.
        secret_access_key: AWS secret access key.
        session_token: token for temporary credentials.
    """

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    access_key_id: Optional[str] = None
    secret_access_key: Optional[str] = None
    session_token: Optional[str] = None

    @classmethod
    def from_env(cls) -> "StorageOptions":
        """Options from the standard AWS environment variables."""
        env = os.environ.get
        return cls(
            endpoint_url=env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
            region=env("AWS_REGION") or env("AWS_DEFAULT_REGION"),
            access_key_id=env("AWS_ACCESS_KEY_ID"),
            secret_access_key=env("AWS_SECRET_ACCESS_KEY"),
            session_token=env("AWS_SESSION_TOKEN"),
        )


def is_s3(uri: str) -> bool:
    """True for `s3://bucket/key` URIs."""
    return uri.startswith(S3_PREFIX)


def join(uri: str, *parts: str) -> str:
    """Join path parts with "/" onto a local path or an s3:// URI."""
    if not is_s3(uri):
        return os.path.join(uri, *parts)
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def _resolve(options: Optional[StorageOptions]) -> StorageOptions:
    return StorageOptions.from_env() if options is None else options


def s3_filesystem(options: Optional[StorageOptions] = None) -> pafs.S3FileSystem:
    """A pyarrow S3FileSystem for these options (picklable, so Ray workers can use it)."""
    opts = _resolve(options)
    # pyarrow's 3 s default request timeout fails on busy machines and slow stores.
    kwargs: dict[str, Any] = {"request_timeout": 60.0, "connect_timeout": 30.0}
    if opts.endpoint_url:
        parsed = urllib.parse.urlparse(opts.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"S3 endpoint URL {opts.endpoint_url!r} must look like http(s)://host:port"
            )
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    if opts.region:
        kwargs["region"] = opts.region
    if opts.access_key_id or opts.secret_access_key:
        kwargs["access_key"] = opts.access_key_id
        kwargs["secret_key"] = opts.secret_access_key
        kwargs["session_token"] = opts.session_token
    return pafs.S3FileSystem(**kwargs)


def s3_client(options: Optional[StorageOptions] = None) -> Any:
    """A boto3 S3 client for these options."""
    import boto3

    opts = _resolve(options)
    return boto3.client(
        "s3",
        endpoint_url=opts.endpoint_url,
        region_name=opts.region,
        aws_access_key_id=opts.access_key_id,
        aws_secret_access_key=opts.secret_access_key,
        aws_session_token=opts.session_token,
    )


def filesystem(
    uri: str,
    options: Optional[StorageOptions] = None,
) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for `uri` and the path to use with it ("bucket/key" for S3)."""
    if is_s3(uri):
        path = uri[len(S3_PREFIX):].rstrip("/")
        if not path or path.startswith("/"):
            raise ValueError(f"S3 URI {uri!r} must look like s3://bucket/prefix")
        return s3_filesystem(options), path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def exists(uri: str, options: Optional[StorageOptions] = None) -> bool:
    """True if a file exists at `uri`."""
    fs, path = filesystem(uri, options)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(uri: str, options: Optional[StorageOptions] = None) -> bytes:
    """The whole file at `uri`; FileNotFoundError naming `uri` if it is not there."""
    fs, path = filesystem(uri, options)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such file")
    with fs.open_input_stream(path) as stream:
        return stream.read()


def list_files(uri: str, suffix: str, options: Optional[StorageOptions] = None) -> list[str]:
    """Sorted URIs of the files directly under directory `uri` whose names end in `suffix`.

    Names starting with "." (temporary files of unfinished local writes) are left out.
    A directory that does not exist has no files.
    """
    fs, path = filesystem(uri, options)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    names = sorted(
        info.base_name
        for info in infos
        if info.type == pafs.FileType.File
        and info.base_name.endswith(suffix)
        and not info.base_name.startswith(".")
    )
    return [join(uri, name) for name in names]


def file_size(uri: str, options: Optional[StorageOptions] = None) -> int:
    """Size in bytes of the file at `uri`."""
    fs, path = filesystem(uri, options)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such file")
    return int(info.size)


def put_file(local_path: str, uri: str, options: Optional[StorageOptions] = None) -> None:
    """Publish a finished local file at `uri` atomically (the local file is left in place).

    Local: copy to a hidden temporary name beside the target, then os.replace. S3: stream
    the file up (pyarrow switches to a multipart upload for large files); the object
    appears only when the upload completes.
    """
    if not is_s3(uri):
        with open(local_path, "rb") as src:
            _replace_local(os.path.abspath(uri), lambda dst: _copy_to(src, dst))
        return
    fs, path = filesystem(uri, options)
    with open(local_path, "rb") as src:
        _upload(fs, path, lambda dst: _copy_to(src, dst))


def write_bytes(uri: str, data: bytes, options: Optional[StorageOptions] = None) -> None:
    """Write `data` to `uri` atomically (see `put_file`)."""
    if not is_s3(uri):
        _replace_local(os.path.abspath(uri), lambda dst: dst.write(data))
        return
    fs, path = filesystem(uri, options)
    _upload(fs, path, lambda dst: dst.write(data))


def write_stream(uri: str, write: Callable[[BinaryIO], Any], options: Optional[StorageOptions] = None) -> int:
    """Publish what `write(file)` writes at `uri` atomically; return its size in bytes.

    Local: `write` fills a hidden temporary file beside the target, which is renamed onto it
    (a killed writer leaves only that hidden file, which `remove_temp_files` deletes). S3:
    `write` fills memory, which is uploaded once complete, so no local file is ever left.
    """
    if not is_s3(uri):
        target = os.path.abspath(uri)
        _replace_local(target, write)
        return os.path.getsize(target)
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getbuffer()
    fs, path = filesystem(uri, options)
    _upload(fs, path, lambda dst: _copy_to(io.BytesIO(data), dst))
    return len(data)


def delete_file(uri: str, options: Optional[StorageOptions] = None) -> None:
    """Delete the file at `uri` (FileNotFoundError naming it if there is none)."""
    fs, path = filesystem(uri, options)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such file")
    if is_s3(uri):  # boto3: pyarrow's delete_file leaves a "<prefix>/" directory marker object
        bucket, _, key = path.partition("/")
        s3_client(options).delete_object(Bucket=bucket, Key=key)
        return
    fs.delete_file(path)


def remove_temp_files(uri: str, options: Optional[StorageOptions] = None) -> list[str]:
    """Remove what unfinished writes left directly under directory `uri`; return what went.

    Local: the hidden `.<name>.tmp-*` files of killed writers. S3: unfinished multipart
    uploads of keys directly under the prefix (never visible as objects, but stored and
    billed until aborted). Only call this while no other writer uses `uri` (see `exclusive`).
    """
    if is_s3(uri):
        return _abort_uploads(uri, options)
    if not os.path.isdir(uri):
        return []
    removed = []
    for name in sorted(os.listdir(uri)):
        path = os.path.join(uri, name)
        if name.startswith(".") and TEMP_TAG in name and os.path.isfile(path):
            os.unlink(path)
            removed.append(path)
    return removed


def _abort_uploads(uri: str, options: Optional[StorageOptions]) -> list[str]:
    _, path = filesystem(uri, options)
    bucket, _, key = path.partition("/")
    prefix = f"{key}/" if key else ""
    from botocore.exceptions import ClientError

    client = s3_client(options)
    aborted = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if "/" in upload["Key"][len(prefix):]:
                    continue  # below a sub-prefix: not directly under `uri`
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted.append(f"{S3_PREFIX}{bucket}/{upload['Key']}")
    except ClientError as exc:  # e.g. no s3:ListBucketMultipartUploads permission: not fatal
        log.warning("%s: cannot list or abort unfinished uploads (%s); a bucket lifecycle rule can", uri, exc)
    return aborted


@contextlib.contextmanager
def exclusive(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on local directory `uri` (created if missing) for the block.

    The lock is an flock on the directory itself: it leaves no file behind and the kernel
    releases it when its holder dies. BlockingIOError naming `uri` if another process holds
    it. For S3 URIs this does nothing (S3 has no locks; run one writer per prefix).
    """
    if is_s3(uri):
        yield
        return
    os.makedirs(uri, exist_ok=True)
    fd = os.open(uri, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BlockingIOError(exc.errno, f"{uri}: another process is writing here") from exc
        yield
    finally:
        os.close(fd)


def _replace_local(target: str, write: Callable[[BinaryIO], Any]) -> None:
    """Write through `write` into a hidden temporary file beside `target`, then rename."""
    with atomic_path(target) as tmp, open(tmp, "xb") as dst:
        write(dst)
        dst.flush()
        os.fsync(dst.fileno())


def _upload(fs: pafs.FileSystem, path: str, write: Callable[[Any], Any]) -> None:
    """Upload through `write`; on failure delete whatever the closing stream published.

    pyarrow has no way to abort an S3 output stream: closing it (also from its destructor)
    completes the upload. Sources here are finished files or bytes, so a failure is a
    network or server error, in which case the upload never completes; the delete covers
    the rare failure on our side after the stream opened.
    """
    try:
        with fs.open_output_stream(path) as dst:
            write(dst)
    except BaseException:
        try:
            fs.delete_file(path)
        except OSError:
            pass
        raise


def _copy_to(src: BinaryIO, dst: Any) -> None:
    while True:
        chunk = src.read(_COPY_CHUNK)
        if not chunk:
            return
        dst.write(chunk)
