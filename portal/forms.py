"""Server-side validation for every portal and staff form."""

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils import timezone

from apiservice.models import APIKey, Membership, Organisation, Scope
from models_registry.models import ALIAS_VALIDATOR, NAME_VALIDATOR, RESERVED_ALIASES, MLModel, ModelVersion

from .billing_link import MAX_MONTHLY_BUDGET_UNITS, budgets_supported
from .selectors import MAX_RANGE_DAYS, organisation_label


class OrganisationChoiceField(forms.ModelChoiceField):
    """Organisations by id, shown as "name (slug)": two organisations may share a name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(queryset=Organisation.objects.order_by("name", "slug"), **kwargs)

    def label_from_instance(self, obj: Any) -> str:
        return organisation_label(name=obj.name, slug=obj.slug)


class SignupForm(UserCreationForm):
    organisation_name = forms.CharField(label="Organisation name", max_length=200)
    email = forms.EmailField(label="Email", help_text="Used for password resets and invitations.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("organisation_name", "username", "email")

    def clean_organisation_name(self) -> str:
        return " ".join(self.cleaned_data["organisation_name"].split())  # one line, single spaces

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists; log in instead.")
        return email


class OrganisationCreateForm(forms.Form):
    """A signed-in user's new organisation (they own it)."""

    organisation_name = forms.CharField(label="Organisation name", max_length=200)

    def clean_organisation_name(self) -> str:
        name = " ".join(self.cleaned_data["organisation_name"].split())  # one line, single spaces
        if not name:
            raise forms.ValidationError("Give the organisation a name.")
        return name


class InvitationSignupForm(UserCreationForm):
    """Create an account to accept an invitation; the email is the invited one."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email address")
    role = forms.ChoiceField(label="Role", choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class APIKeyCreateForm(forms.Form):
    name = forms.CharField(label="Name", max_length=50, help_text="What the key is for, e.g. 'production backend'.")
    scopes = forms.MultipleChoiceField(
        label="Scopes", choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.PREDICT.value]
    )
    expires_on = forms.DateField(
        label="Expires on (optional)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The key stops working at the start of this day (UTC).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # HOOK(billing, issue 5): a per-key monthly budget appears once APIKey has the field.
        if budgets_supported():
            self.fields["monthly_budget_units"] = forms.IntegerField(
                label="Monthly budget in units (optional)",
                required=False,
                min_value=1,
                max_value=MAX_MONTHLY_BUDGET_UNITS,
                error_messages={"max_value": f"Choose at most {MAX_MONTHLY_BUDGET_UNITS:,} units, or no budget."},
            )

    def clean_expires_on(self) -> date | None:
        expires_on: date | None = self.cleaned_data.get("expires_on")
        if expires_on is not None and expires_on <= timezone.localdate():
            raise forms.ValidationError("Choose a day after today.")
        return expires_on

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone()) if day else None


class DateRangeForm(forms.Form):
    start = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    DEFAULT_DAYS = 30
    # The pages count days before and after the range, and Python's dates stop at years 1 and 9999;
    # no usage is older than 2000.
    FIRST_DAY = date(2000, 1, 1)
    LAST_DAY = date(9998, 12, 31)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        end = timezone.localdate()
        self.fields["start"].initial = end - timedelta(days=self.DEFAULT_DAYS - 1)
        self.fields["end"].initial = end

    def _within_bounds(self, name: str) -> date | None:
        day: date | None = self.cleaned_data.get(name)
        if day is not None and not self.FIRST_DAY <= day <= self.LAST_DAY:
            raise forms.ValidationError(f"Choose a day between {self.FIRST_DAY} and {self.LAST_DAY}.")
        return day

    def clean_start(self) -> date | None:
        return self._within_bounds("start")

    def clean_end(self) -> date | None:
        return self._within_bounds("end")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        end = data.get("end") or timezone.localdate()
        start = data.get("start") or end - timedelta(days=self.DEFAULT_DAYS - 1)
        if start > end:
            raise forms.ValidationError("'From' must be on or before 'To'.")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_RANGE_DAYS} days.")
        data.update(start=start, end=end)
        return data

    def range(self) -> tuple[date, date]:
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        end = timezone.localdate()
        return end - timedelta(days=self.DEFAULT_DAYS - 1), end


class UsageFilterForm(DateRangeForm):
    model = forms.ModelChoiceField(
        label="Model", required=False, queryset=MLModel.objects.none(), empty_label="All models"
    )
    key = forms.ModelChoiceField(
        label="API key", required=False, queryset=APIKey.objects.none(), empty_label="All keys", to_field_name="prefix"
    )

    def __init__(self, *args: Any, models: Any, keys: Any = None, **kwargs: Any) -> None:
        """`keys`: the organisation's API keys to choose from (revoked ones too); None: no key filter."""
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models  # type: ignore[attr-defined]
        if keys is None:
            del self.fields["key"]
            return
        field = self.fields["key"]
        field.queryset = keys  # type: ignore[attr-defined]
        field.label_from_instance = lambda k: f"{k.name} ({k.prefix})"  # type: ignore[attr-defined]


class StaffUsageFilterForm(UsageFilterForm):
    organisation = OrganisationChoiceField(label="Organisation", required=False, empty_label="All organisations")


class VersionUploadForm(forms.Form):
    model_name = forms.CharField(
        label="Model name",
        max_length=63,
        validators=[NAME_VALIDATOR],
        help_text="An existing model gets a new version; a new name creates the model.",
    )
    organisation = OrganisationChoiceField(
        label="Owner (new models only)", required=False, empty_label="Public catalogue"
    )
    description = forms.CharField(
        label="Description (new models only)", required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    file = forms.FileField(label="ONNX file", widget=forms.ClearableFileInput(attrs={"accept": ".onnx"}))
    aliases = forms.CharField(
        label="Aliases to point at it if valid (optional)",
        required=False,
        help_text="Comma-separated, e.g. 'staging' or 'production'.",
    )

    def clean_aliases(self) -> list[str]:
        aliases = [a.strip() for a in self.cleaned_data.get("aliases", "").split(",") if a.strip()]
        for alias in aliases:
            ALIAS_VALIDATOR(alias)
            if alias in RESERVED_ALIASES:
                raise forms.ValidationError(f"'{alias}' is reserved.")
        return aliases


class ReadyVersionField(forms.ModelChoiceField):
    """A ready version of `model`, by number; a refusal says why (failed, still validating, or none)."""

    model: MLModel | None = None

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except forms.ValidationError:
            raise forms.ValidationError(self._refusal(str(value)), code="invalid_choice") from None

    def _refusal(self, value: str) -> str:
        assert self.model is not None
        found = None
        if value.isascii() and value.isdigit():
            found = self.model.versions.filter(number=int(value)).first()
        if found is None:
            why = f"{self.model.name} has no version {value}"
        elif found.status == ModelVersion.Status.FAILED:
            why = f"Version {found.number} of {self.model.name} failed validation"
        else:
            why = f"Version {found.number} of {self.model.name} is {found.get_status_display().lower()}"
        return f"{why}; choose one of its ready versions."


class AliasMoveForm(forms.Form):
    alias = forms.CharField(label="Alias", max_length=40, validators=[ALIAS_VALIDATOR])
    version = ReadyVersionField(
        label="Point it at version", queryset=ModelVersion.objects.none(), to_field_name="number"
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, model: MLModel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["version"]
        field.model = model  # type: ignore[attr-defined]
        field.queryset = model.versions.filter(status=ModelVersion.Status.READY).order_by("-number")  # type: ignore[attr-defined]
        field.label_from_instance = lambda v: f"{v.number} ({v.created_at:%Y-%m-%d})"  # type: ignore[attr-defined]

    def clean_alias(self) -> str:
        alias: str = self.cleaned_data["alias"].strip()
        if alias in RESERVED_ALIASES:
            raise forms.ValidationError(f"'{alias}' is reserved.")
        return alias


class BatchCreateForm(forms.Form):
    """Upload an input file and start a batch job on one model version (or alias)."""

    file = forms.FileField(
        label="Input file (JSONL or CSV)",
        help_text="One request per line: JSONL with <code>custom_id</code> and <code>instances</code>/"
        "<code>inputs</code>, or CSV with one column per input value.",
    )
    model = forms.ModelChoiceField(label="Model", queryset=MLModel.objects.none(), to_field_name="name")
    version = forms.CharField(
        label="Version or alias (optional)", required=False, max_length=40, help_text="Default: the model's default."
    )
    output_format = forms.ChoiceField(
        label="Output format", choices=[("jsonl", "JSONL"), ("csv", "CSV (CSV input only)")], initial="jsonl"
    )

    def __init__(self, *args: Any, models: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models  # type: ignore[attr-defined]


class BundleRequestForm(forms.Form):
    """Request an edge bundle of one ready version with the chosen variants."""

    version = forms.ModelChoiceField(label="Model version", queryset=ModelVersion.objects.none())
    variants = forms.MultipleChoiceField(
        label="Variants",
        choices=[("fp32", "fp32 (the model as is)"), ("int8", "int8 (quantised)"), ("ort", "ort (ORT format)")],
        widget=forms.CheckboxSelectMultiple,
        initial=["fp32", "int8", "ort"],
    )

    def __init__(self, *args: Any, versions: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["version"]
        field.queryset = versions  # type: ignore[attr-defined]
        field.label_from_instance = lambda v: f"{v.model.name} v{v.number}"  # type: ignore[attr-defined]


class UpgradeForm(forms.Form):
    plan = forms.SlugField(label="Plan", max_length=40)
