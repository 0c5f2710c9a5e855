"""Path converters shared by every app's URLs: `<mname:model>` (a model name), `<ref:version>`
(a version number, an alias or `latest`) and `<pid:...>` (a public id or other free-form segment).
Importing this module registers them."""

from django.urls import register_converter


class NameConverter:
    regex = r"[a-z0-9][a-z0-9._-]{0,62}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class RefConverter:
    regex = r"[A-Za-z0-9_-]{1,40}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class PublicIdConverter:
    """Django's `str` without NUL: PostgreSQL text cannot hold one, so a lookup by `%00` was a 500, not a 404."""

    regex = r"[^/\x00]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(NameConverter, "mname")
register_converter(RefConverter, "ref")
register_converter(PublicIdConverter, "pid")
