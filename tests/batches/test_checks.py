from batches.checks import check_batch_settings


def test_it_accepts_the_default_batch_settings():
    assert check_batch_settings(None) == []


def test_it_flags_bad_batch_settings(settings):
    settings.BATCH_MAX_ERROR_RATE = 2
    settings.BATCH_CHUNK_ROWS = 0
    settings.WEBHOOK_ALLOWED_NETWORKS = ["not-a-network"]
    assert [e.id for e in check_batch_settings(None)] == ["batches.E001", "batches.E002", "batches.E003"]


def test_it_flags_a_validation_part_size_below_one_byte(settings):
    settings.BATCH_VALIDATION_PART_BYTES = 0
    assert [e.id for e in check_batch_settings(None)] == ["batches.E002"]
