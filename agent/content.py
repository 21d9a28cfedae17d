"""Multimodal user content in the compatible-mode shapes: image parts, video parts, user messages.

Local files become base64 data URLs; remote media stay URLs the provider fetches itself.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.errors import UserError

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "image_part", "user_message", "video_part"]

DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""The largest local image encoded by default: 10 MiB."""

Source = str | Path

# Formats recognised by their first bytes; WEBP is a RIFF container checked separately.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
)
_SNIFFED_TYPES = frozenset(mime for _, mime in _MAGIC) | {"image/webp"}


def _is_remote(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def _is_data_url(source: str) -> bool:
    return source[:5].lower() == "data:"


def _sniff(head: bytes) -> str | None:
    """Return the image MIME type that a file's first bytes announce, if any."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    return None


def _read_local_image(path: Path, max_bytes: int) -> tuple[bytes, str]:
    """Read a local image, checking it exists, fits `max_bytes` and is a known image type."""
    if not path.exists():
        raise UserError(f"image file not found: {path}")
    if not path.is_file():
        raise UserError(f"image path is not a file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise UserError(
            f"image {path} is {size:,} bytes ({size / 1_048_576:.1f} MiB), over the limit of "
            f"{max_bytes:,} bytes ({max_bytes / 1_048_576:.1f} MiB)"
        )
    data = path.read_bytes()
    mime = _sniff(data[:16])
    if mime is None:
        guessed, _ = mimetypes.guess_type(path.name)
        # A name claiming a format we can sniff, on bytes that are not that format, is a
        # mislabelled or corrupt file; the provider would reject it with a vaguer message.
        if guessed in _SNIFFED_TYPES:
            raise UserError(f"image {path} is named as {guessed} but its content is not {guessed}")
        if guessed is None or not guessed.startswith("image/") or guessed == "image/svg+xml":
            known = ", ".join(sorted(t.removeprefix("image/").upper() for t in _SNIFFED_TYPES))
            raise UserError(
                f"image {path} is of an unknown or unsupported type ({guessed or 'unrecognised'}); "
                f"supported: {known}"
            )
        mime = guessed
    return data, mime


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image_url(source: Source, max_bytes: int) -> str:
    """Turn an image source into the URL string the provider takes."""
    if isinstance(source, str) and (_is_remote(source) or _is_data_url(source)):
        return source
    data, mime = _read_local_image(Path(source), max_bytes)
    return _data_url(data, mime)


def image_part(source: Source, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> dict[str, Any]:
    """Build an `image_url` content part from a URL, a data URL or a local file.

    Args:
        source: An http(s) URL or a `data:` URL (both passed through), or a local file path,
            which is read and base64-encoded with its MIME type detected from its first bytes
            (JPEG, PNG, GIF, WEBP, BMP, TIFF), else guessed from its extension.
        max_bytes: The largest local file accepted.

    Returns:
        `{"type": "image_url", "image_url": {"url": ...}}`.

    Raises:
        UserError: The file is missing, too large, or not a recognised image type.
    """
    return {"type": "image_url", "image_url": {"url": _image_url(source, max_bytes)}}


def video_part(
    source: Source | Sequence[Source], *, max_frame_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> dict[str, Any]:
    """Build a video content part from a video URL or from a list of frames.

    A single video goes as `{"type": "video_url", "video_url": {"url": ...}}`; a list of frames
    goes as `{"type": "video", "video": [frame urls]}` (the reference's example 5). Local frame
    files become data URLs. A local video file is refused: publish it and pass its URL, or pass
    its frames.

    Args:
        source: An http(s) or `data:` URL of a video file, or a sequence of frame images (each
            an http(s) URL, a `data:` URL or a local image file).
        max_frame_bytes: The largest local frame file accepted.

    Returns:
        The content part.

    Raises:
        UserError: A local video file was given, the frame list is empty, or a frame file is
            missing, too large or not an image.
    """
    if isinstance(source, str | Path):
        if isinstance(source, str) and (_is_remote(source) or _is_data_url(source)):
            return {"type": "video_url", "video_url": {"url": source}}
        raise UserError(
            f"a local video file cannot be sent ({source}): publish it and pass its http(s) URL, "
            "or pass a list of its frames"
        )
    frames = list(source)
    if not frames:
        raise UserError("the video frame list is empty: pass at least one frame")
    return {"type": "video", "video": [_image_url(frame, max_frame_bytes) for frame in frames]}


def user_message(
    text: str | None,
    *,
    images: Source | Iterable[Source] = (),
    video: Source | Sequence[Source] | None = None,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> dict[str, Any]:
    """Build a user message, with media parts first and the text last when there are media.

    Args:
        text: The text of the message, or None for media alone.
        images: Image sources (see `image_part`); a single source is accepted too.
        video: A video URL or a list of frames (see `video_part`), or None.
        max_image_bytes: The largest local image or frame file accepted.

    Returns:
        `{"role": "user", "content": text}` without media, else
        `{"role": "user", "content": [media parts..., {"type": "text", "text": text}]}`.

    Raises:
        UserError: The message would be empty, or a media source is unusable.
    """
    image_sources = [images] if isinstance(images, str | Path) else list(images)
    if not image_sources and video is None:
        if text is None:
            raise UserError("a user message needs text, images or a video")
        return {"role": "user", "content": text}
    parts = [image_part(src, max_bytes=max_image_bytes) for src in image_sources]
    if video is not None:
        parts.append(video_part(video, max_frame_bytes=max_image_bytes))
    if text is not None:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}
