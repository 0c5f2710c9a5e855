"""The S3-compatible storage's settings (STORAGE_BACKEND=s3), in one place for the settings and the tests."""

# An S3 file opened for reading is downloaded whole into a spooled temporary file before its first
# byte is read. django-storages' default keeps all of it in memory (AWS_S3_MAX_MEMORY_SIZE=0), so
# every batch validation part held the whole input file in memory; above this it spills to disk.
S3_MAX_MEMORY_BYTES = 8 * 1024 * 1024


def s3_storage(*, bucket: str, endpoint_url: str | None, region: str | None) -> dict[str, object]:
    """The STORAGES["default"] entry for a bucket (credentials: boto3's, e.g. AWS_ACCESS_KEY_ID)."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url,
            "region_name": region,
            "signature_version": "s3v4",
            "addressing_style": "path",
            "default_acl": None,
            "querystring_auth": True,
            "max_memory_size": S3_MAX_MEMORY_BYTES,
        },
    }
