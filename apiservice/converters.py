"""Path converters shared by every app's URLs: `<mname:model>` (a model name) and `<ref:version>`
(a version number, an alias or `latest`). Importing this module registers them."""

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


register_converter(NameConverter, "mname")
register_converter(RefConverter, "ref")
