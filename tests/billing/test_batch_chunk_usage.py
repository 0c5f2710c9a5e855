from billing.models import UsageRecord
from billing.services import usage_record_batch_chunk


def test_it_bills_a_batch_chunk_once(org, diabetes):
    args = {
        "batch_id": "batch_x",
        "chunk_index": 3,
        "organisation_id": org.pk,
        "api_key_id": None,
        "model_version_id": diabetes.pk,
        "units": 50,
    }
    assert usage_record_batch_chunk(**args) is True
    assert usage_record_batch_chunk(**{**args, "units": 49}) is False
    (record,) = UsageRecord.objects.all()
    assert record.request_id == "batch_batch_x_chunk_3"
    assert (record.face, record.meter, record.units, record.billable) == ("batch", "batch_rows", 50, True)
