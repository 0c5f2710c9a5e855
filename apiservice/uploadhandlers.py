"""Django's upload handlers, fed `FILE_UPLOAD_CHUNK_BYTES` at a time instead of 64 KiB.

Large multipart uploads (batch input files, model files) pass through Django's multipart parser and
gunicorn's body reader once per chunk; gunicorn receives up to 1 MiB per recv() and copies what a
smaller read leaves over, so 64 KiB reads copy most of the body several times. 1 MiB reads cut the
server's time for a 136 MB upload by about a sixth (bench/batch.py, docs/batch.md).
"""

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, MemoryFileUploadHandler, TemporaryFileUploadHandler


class _SettingChunkSize(FileUploadHandler):
    """Reads `FILE_UPLOAD_CHUNK_BYTES` at a time (Django's handlers fix 64 KiB as a class attribute)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_size = int(settings.FILE_UPLOAD_CHUNK_BYTES)


class MemoryUploadHandler(_SettingChunkSize, MemoryFileUploadHandler):
    """Small files (up to FILE_UPLOAD_MAX_MEMORY_SIZE) in memory."""


class TemporaryUploadHandler(_SettingChunkSize, TemporaryFileUploadHandler):
    """Larger files streamed to a temporary file (moved, not copied, into local storage)."""
