"""Path converters shared by every app's URLs: `<mname:model>` (a model name), `<ref:version>`
(a version number, an alias or `latest`) and `<pid:...>` (a public id or other free-form segment).
Importing this module registers them. Each is Django's `str` converter (the text as it is) with its
own pattern."""

from django.urls import register_converter
from django.urls.converters import StringConverter


class NameConverter(StringConverter):
    regex = r"[a-z0-9][a-z0-9._-]{0,62}"


class RefConverter(StringConverter):
    regex = r"[A-Za-z0-9_-]{1,40}"


class PublicIdConverter(StringConverter):
    """Django's `str` without NUL: PostgreSQL text cannot hold one, so a lookup by `%00` was a 500, not a 404."""

    regex = r"[^/\x00]+"


register_converter(NameConverter, "mname")
register_converter(RefConverter, "ref")
register_converter(PublicIdConverter, "pid")
