"""From an HTTP upload to a validated scene payload.

Two ways to send a scene (multipart/form-data):

* ``archive``: one zip or tar (optionally gzip/bzip2/xz) in the MVSNet test layout,
  ``images/``, ``cams/``, ``pair.txt``, at the top or under one folder;
* ``images`` (one file per view, named by view id: ``00000000.jpg``), ``cams``
  (``00000000_cam.txt``) and optionally ``pair`` (pair.txt).

Everything lands in a per-request ``tempfile.TemporaryDirectory`` that is removed when the
request is done, failed or not. Archive entries are checked before anything is written:
absolute paths, ``..``, links and special files are refused, and the bytes written are
counted against a cap (zip bombs). The scene is then loaded by the core loader, which names
the file, the line and the problem of anything wrong with it, every image is fully decoded
(truncated files), and the validated files are packed as a ``ScenePayload``.
"""

from __future__ import annotations

import lzma
import re
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image

from mvs.data.scene import Scene, load_mvsnet_scene
from mvs.data.view_selection import pairs_from_cameras
from mvs.errors import MVSInputError
from mvs.io.images import IMAGE_SUFFIXES
from mvs.io.pair import write_pair
from mvs_serving.config import MB, ServiceConfig
from mvs_serving.errors import RequestError, bad_request, scene_error, too_large, unprocessable
from mvs_serving.options import ReconstructOptions
from mvs_serving.payload import ScenePayload

FILE_FIELDS = ("archive", "images", "cams", "pair")
_IMAGE_NAME = re.compile(r"\d+(" + "|".join(re.escape(s) for s in IMAGE_SUFFIXES) + r")", re.IGNORECASE)
_CAM_NAME = re.compile(r"\d+_cam\.txt")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_COPY_CHUNK = 1 << 20
# What reading a damaged zip/tar (or its gzip/bzip2/xz compression) can raise.
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError)


@dataclass
class UploadedFile:
    """One file of a multipart upload: its form field, the name the client gave, its content."""

    field: str
    filename: str
    file: BinaryIO  # seekable (starlette spools uploads to an anonymous temporary file)


# ----------------------------------------------------------------------------- request body


async def read_multipart(request, config: ServiceConfig):
    """Parse a multipart/form-data body, refusing it (413) once it passes ``max_upload_mb``.

    The body is counted as it streams in, so a client that sends no Content-Length (or a
    false one) cannot make the server store more than the limit.

    Returns:
        starlette ``FormData``; the caller must ``await form.close()``.
    """
    from starlette.formparsers import MultiPartException, MultiPartParser

    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise RequestError(
            415, "unsupported_media_type",
            "send the scene as multipart/form-data (one 'archive' file, or 'images', 'cams' and "
            f"optionally 'pair' files), got Content-Type {content_type or 'none'!r}",
        )
    limit = config.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise bad_request("invalid_request", f"Content-Length {declared!r} is not a number") from None
        if declared_bytes > limit:
            raise _upload_too_large(declared_bytes, limit)
    received = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _upload_too_large(received, limit, at_least=True)
            yield chunk

    # The file cap only stops floods of parts; scenes with too many views are refused later,
    # when they are counted, with a message that says so.
    parser = MultiPartParser(
        request.headers, counted(), max_files=4 * config.max_views + 8, max_fields=64,
        max_part_size=64 * 1024,
    )
    try:
        return await parser.parse()
    except MultiPartException as error:
        if "Too many files" in str(error):
            raise too_large(
                "too_many_views", f"too many files in one request ({error}); at most "
                f"{config.max_views} views (max_views)",
            ) from None
        raise bad_request("invalid_multipart", f"the multipart body cannot be parsed: {error}") from None


def _upload_too_large(size: int, limit: int, at_least: bool = False) -> RequestError:
    more = "more than " if at_least else ""
    return too_large(
        "upload_too_large",
        f"request body is {more}{size / MB:.1f} MiB; this service accepts at most "
        f"{limit / MB:g} MiB (max_upload_mb)",
    )


def split_form(form) -> tuple[list[UploadedFile], list[tuple[str, str]]]:
    """Files and option fields of a parsed form; a file in an unknown field is refused."""
    from starlette.datastructures import UploadFile

    files, fields = [], []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name not in FILE_FIELDS:
                raise unprocessable(
                    "unsupported_option",
                    f"unexpected file field {name!r}; files go in {', '.join(FILE_FIELDS)}",
                )
            files.append(UploadedFile(name, value.filename or "", value.file))
        elif name in FILE_FIELDS:
            raise bad_request("invalid_request", f"field {name!r} must be a file upload, got a plain value")
        else:
            fields.append((name, value))
    return files, fields


# ----------------------------------------------------------------------------- loose files


def _basename(filename: str) -> str:
    """The last component of a client-side file name (browsers may send folders too)."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1].strip()


def _copy_limited(source: BinaryIO, target: Path, budget: list[int], what: str) -> None:
    """Copy ``source`` into ``target`` while ``budget[0]`` bytes remain (then 413)."""
    with open(target, "wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise too_large(
                    "scene_too_large",
                    f"{what}: the scene's files exceed the uncompressed limit (max_uncompressed_mb)",
                )
            out.write(chunk)


def write_loose_files(files: list[UploadedFile], root: Path, config: ServiceConfig) -> None:
    """Write ``images``, ``cams`` and ``pair`` uploads into the MVSNet layout under ``root``."""
    (root / "images").mkdir(parents=True)
    (root / "cams").mkdir()
    budget = [config.max_uncompressed_bytes]
    pairs = [f for f in files if f.field == "pair"]
    if len(pairs) > 1:
        raise bad_request("invalid_request", f"{len(pairs)} pair files uploaded; send at most one")
    if not any(f.field == "images" for f in files):
        raise bad_request(
            "no_scene", "no images uploaded: send one 'archive', or 'images' and 'cams' files",
        )
    written: set[str] = set()
    for upload in files:
        if upload.field == "pair":
            _copy_limited(upload.file, root / "pair.txt", budget, "pair.txt")
            continue
        name = _basename(upload.filename)
        pattern, example = (_IMAGE_NAME, "00000000.jpg") if upload.field == "images" else (_CAM_NAME, "00000000_cam.txt")
        if not pattern.fullmatch(name):
            raise unprocessable(
                "invalid_scene",
                f"{upload.field}: file name {upload.filename!r} is not a view id with the expected "
                f"suffix (like {example})",
            )
        relative = f"{upload.field}/{name}"
        if relative in written:
            raise bad_request("invalid_request", f"{relative} is uploaded twice")
        written.add(relative)
        _copy_limited(upload.file, root / relative, budget, relative)


# ----------------------------------------------------------------------------- archives


def _member_path(name: str) -> PurePosixPath:
    """The relative path of an archive entry, refusing anything that could leave the folder."""
    if "\x00" in name:
        raise bad_request("unsafe_archive", f"archive entry {name!r} has a NUL byte in its name")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"[A-Za-z]:", unified):
        raise bad_request("unsafe_archive", f"archive entry {name!r} has an absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise bad_request("unsafe_archive", f"archive entry {name!r} climbs out of the archive with '..'")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


@dataclass
class _Entry:
    path: PurePosixPath
    size: int  # as declared by the archive; the copy counts the real bytes
    open: object  # () -> binary file


def _zip_entries(archive: zipfile.ZipFile, config: ServiceConfig) -> Iterator[_Entry]:
    infos = archive.infolist()
    if len(infos) > config.max_archive_entries:
        raise too_large("archive_too_large", f"archive has {len(infos)} entries; at most {config.max_archive_entries}")
    for info in infos:
        path = _member_path(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise bad_request("unsafe_archive", f"archive entry {info.filename!r} is a symbolic link")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise bad_request("invalid_archive", f"archive entry {info.filename!r} is encrypted")
        yield _Entry(path, info.file_size, lambda info=info: archive.open(info))


def _tar_entries(archive: tarfile.TarFile, config: ServiceConfig) -> Iterator[_Entry]:
    count = 0
    while (member := archive.next()) is not None:
        count += 1
        if count > config.max_archive_entries:
            raise too_large("archive_too_large", f"archive has more than {config.max_archive_entries} entries")
        path = _member_path(member.name)
        if member.issym() or member.islnk():
            raise bad_request("unsafe_archive", f"archive entry {member.name!r} is a link (to {member.linkname!r})")
        if member.isdir():
            continue
        if not member.isfile():
            raise bad_request("unsafe_archive", f"archive entry {member.name!r} is not a regular file")
        yield _Entry(path, member.size, lambda member=member: archive.extractfile(member))


def _scene_prefix(paths: list[PurePosixPath]) -> PurePosixPath:
    """The folder of the archive that holds ``images/`` (the top, or one folder)."""
    prefixes = {
        p.parent.parent for p in paths
        if len(p.parts) >= 2 and p.parent.name == "images" and not p.parts[0].startswith("__MACOSX")
    }
    if not prefixes:
        raise unprocessable(
            "invalid_scene",
            "archive holds no images/ folder; expected the MVSNet test layout (images/, cams/, pair.txt)",
        )
    if len(prefixes) > 1:
        listed = ", ".join(sorted(str(p) + "/" if str(p) != "." else "(top)" for p in prefixes))
        raise unprocessable("invalid_scene", f"archive holds several scenes (images/ under {listed}); send one per request")
    return prefixes.pop()


def extract_archive(upload: UploadedFile, root: Path, config: ServiceConfig) -> str:
    """Extract the scene files of a zip/tar upload into ``root``; returns the scene's name.

    Every entry is checked first (paths, links, sizes); only ``images/*``, ``cams/*`` and
    ``pair.txt`` of the scene folder are written, with the bytes counted as they are.
    """
    source = upload.file
    source.seek(0)
    opened: zipfile.ZipFile | tarfile.TarFile
    if zipfile.is_zipfile(source):
        source.seek(0)
        try:
            opened = zipfile.ZipFile(source)
        except zipfile.BadZipFile as error:
            raise bad_request("invalid_archive", f"archive {upload.filename!r} is a damaged zip file ({error})") from None
        entries_of = _zip_entries
    else:
        source.seek(0)
        try:
            opened = tarfile.open(fileobj=source, mode="r:*")
        except _ARCHIVE_ERRORS as error:
            raise bad_request(
                "invalid_archive",
                f"archive {upload.filename!r} is neither a zip nor a tar file (tar may be gzip, "
                f"bzip2 or xz compressed): {error}",
            ) from None
        entries_of = _tar_entries
    with opened as archive:
        entries: list[_Entry] = []
        seen: set[PurePosixPath] = set()
        declared = 0
        try:
            for entry in entries_of(archive, config):  # type: ignore[arg-type]
                # Checked entry by entry: moving past a huge compressed entry would already
                # cost the time of decompressing it.
                declared += entry.size
                if declared > config.max_uncompressed_bytes:
                    raise too_large(
                        "scene_too_large",
                        f"archive unpacks to more than {config.max_uncompressed_mb:g} MiB "
                        f"(max_uncompressed_mb); entry {entry.path} alone is {entry.size / MB:.1f} MiB",
                    )
                if entry.path in seen:
                    raise bad_request("invalid_archive", f"archive entry {entry.path} appears twice")
                seen.add(entry.path)
                entries.append(entry)
        except _ARCHIVE_ERRORS as error:
            raise bad_request("invalid_archive", f"archive {upload.filename!r} is damaged ({error})") from None
        if not entries:
            raise unprocessable("empty_archive", f"archive {upload.filename!r} holds no files")
        prefix = _scene_prefix([e.path for e in entries])
        (root / "images").mkdir(parents=True)
        (root / "cams").mkdir()
        budget = [config.max_uncompressed_bytes]
        for entry in entries:
            try:
                relative = entry.path.relative_to(prefix) if str(prefix) != "." else entry.path
            except ValueError:
                continue  # outside the scene folder
            parts = relative.parts
            wanted = parts == ("pair.txt",) or (len(parts) == 2 and parts[0] in ("images", "cams"))
            if not wanted or not _SAFE_NAME.fullmatch(parts[-1]):
                continue  # ground truth, previews, notes: not needed
            target = root.joinpath(*parts)
            # Belt and braces: the name checks above already make this impossible.
            if root.resolve() not in target.resolve().parents:
                raise bad_request("unsafe_archive", f"archive entry {entry.path} would be written outside the scene")
            try:
                with entry.open() as stream:  # type: ignore[operator]
                    _copy_limited(stream, target, budget, str(entry.path))
            except _ARCHIVE_ERRORS as error:
                raise bad_request("invalid_archive", f"archive entry {entry.path} cannot be read ({error})") from None
    name = prefix.name if str(prefix) != "." else Path(_basename(upload.filename)).name.split(".")[0]
    return name if _SAFE_NAME.fullmatch(name or "") else "upload"


# ----------------------------------------------------------------------------- scene checks


def count_views(root: Path, max_views: int, endpoint_hint: str = "") -> int:
    """Number of views (images named by id) in ``root/images``: at least 2, at most ``max_views``."""
    images_dir = root / "images"
    ids: dict[int, str] = {}
    if images_dir.is_dir():
        for path in sorted(images_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
                view_id = int(path.stem)
                if view_id in ids:
                    raise unprocessable(
                        "invalid_scene", f"images/{path.name} and images/{ids[view_id]} are both view {view_id}"
                    )
                ids[view_id] = path.name
    if len(ids) < 2:
        raise unprocessable(
            "too_few_views", f"a scene needs at least 2 views (a reference and a source), got {len(ids)}"
        )
    if len(ids) > max_views:
        raise too_large("too_many_views", f"scene has {len(ids)} views; at most {max_views}{endpoint_hint}")
    return len(ids)


def check_images_decode(scene: Scene, config: ServiceConfig) -> None:
    """Decode every image fully: headers alone do not reveal truncated or corrupt files."""
    width, height = scene.image_size
    if width * height > config.max_image_pixels:
        raise too_large(
            "image_too_large",
            f"images are {width}x{height} = {width * height:,} pixels; at most "
            f"{config.max_image_pixels:,} (max_image_pixels)",
        )
    for view_id in scene.view_ids:
        path = scene.views[view_id].image_path
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as error:  # PIL raises several types for truncated/corrupt data
            raise MVSInputError(f"image cannot be decoded; truncated or corrupt ({error})", path) from None


@dataclass
class PreparedScene:
    """The outcome of a good upload."""

    payload: ScenePayload
    pairs_generated: bool  # True when the client sent no pair.txt


def prepare_scene(
    files: list[UploadedFile],
    options: ReconstructOptions,
    config: ServiceConfig,
    max_views: int,
    endpoint_hint: str = "",
) -> PreparedScene:
    """Unpack, validate and pack an upload; the temporary directory is always removed.

    Raises:
        RequestError: 4xx naming the problem (paths relative to the uploaded scene).
    """
    archives = [f for f in files if f.field == "archive"]
    if not files:
        raise bad_request("no_scene", "no files uploaded: send one 'archive', or 'images' and 'cams' files")
    if archives and len(archives) != len(files):
        raise bad_request("invalid_request", "send either one archive or images/cams/pair files, not both")
    if len(archives) > 1:
        raise bad_request("invalid_request", f"{len(archives)} archives uploaded; send one scene per request")
    if config.tmp_dir:
        Path(config.tmp_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mvs-upload-", dir=config.tmp_dir) as tmp:
        root = Path(tmp) / "scene"
        try:
            if archives:
                name = extract_archive(archives[0], root, config)
            else:
                write_loose_files(files, root, config)
                name = "upload"
            count_views(root, max_views, endpoint_hint)
            scene = load_mvsnet_scene(root, options.depth_line, require_pairs=False)
            scene.name = name
            check_images_decode(scene, config)
            pair_path = root / "pair.txt"
            generated = not pair_path.is_file()
            if generated:
                scene.pairs = pairs_from_cameras(
                    [scene.views[v].camera for v in scene.view_ids], view_ids=scene.view_ids
                )
                write_pair(pair_path, scene.pairs)
            if not any(scene.source_views(v) for v in scene.view_ids):
                what = "the cameras' frustums do not overlap; send a pair.txt" if generated else "pair.txt gives no view a source view"
                raise unprocessable("invalid_scene", f"nothing to reconstruct: {what}")
            payload = ScenePayload.from_scene(scene, pair_path.read_text())
        except MVSInputError as error:
            raise scene_error(error, root) from None
        except UnicodeDecodeError:
            raise unprocessable("invalid_scene", "pair.txt: not a text file") from None
    return PreparedScene(payload, generated)

