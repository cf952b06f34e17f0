"""Errors the service answers with: a 4xx status and a JSON body that names the problem.

Every refusal is a ``RequestError``; the ingress turns it into
``{"error": CODE, "detail": MESSAGE}`` with ``status``. Core ``MVSInputError``s (which name
a file, a line and a problem) become 422s whose paths are relative to the uploaded scene,
never to the server's temporary directory.
"""

from __future__ import annotations

from pathlib import Path

from mvs.errors import MVSInputError


class RequestError(Exception):
    """A request the service refuses.

    Args:
        status: HTTP status (4xx for the client's fault).
        code: short machine-readable name, e.g. ``invalid_scene``, ``upload_too_large``.
        detail: what is wrong, naming the file/line/option where there is one.
    """

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail

    def to_dict(self) -> dict:
        return {"error": self.code, "detail": self.detail}


def bad_request(code: str, detail: str) -> RequestError:
    """400: the request itself is malformed (form, archive structure, unsafe entries)."""
    return RequestError(400, code, detail)


def too_large(code: str, detail: str) -> RequestError:
    """413: beyond a configured limit (bytes, views, pixels)."""
    return RequestError(413, code, detail)


def unprocessable(code: str, detail: str) -> RequestError:
    """422: well-formed request whose scene or options cannot be used."""
    return RequestError(422, code, detail)


def scene_error(error: MVSInputError, scene_root: Path) -> RequestError:
    """A 422 from a core input error, with paths shown relative to the uploaded scene."""
    return unprocessable("invalid_scene", relative_message(error, scene_root))


def relative_message(error: MVSInputError, scene_root: Path) -> str:
    """``error``'s message with every path shown relative to ``scene_root``.

    The core names absolute paths (and third-party messages quoted in a problem may too);
    the client only knows the names it uploaded, and the server's layout is none of its
    business.
    """
    root = scene_root.resolve()
    where = ""
    if error.path is not None:
        path = Path(error.path)
        try:
            relative = path.resolve().relative_to(root)
            where = "" if str(relative) == "." else relative.as_posix()
        except ValueError:
            where = path.name
        if where and error.line is not None:
            where += f", line {error.line}"
    problem = error.problem
    for prefix in (f"{root}/", str(root), f"{scene_root}/", str(scene_root)):
        problem = problem.replace(prefix, "")
    return f"{where}: {problem}" if where else problem
