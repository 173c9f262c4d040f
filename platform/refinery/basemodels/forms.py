from django import forms

from refinery.basemodels.models import BaseModel
from refinery.basemodels.services import revision_error


class BaseModelForm(forms.Form):
    name = forms.CharField(max_length=100)
    source = forms.ChoiceField(choices=BaseModel.Source.choices, initial=BaseModel.Source.HUB)
    name_or_path = forms.CharField(
        max_length=500,
        label="Hub id or local path",
        help_text="e.g. Qwen/Qwen2.5-0.5B-Instruct, or a folder inside this team's model "
        "roots on the workers (or upload the model instead)",
    )
    revision = forms.CharField(
        max_length=100, required=False, help_text="Hub branch, tag or commit hash (pin it for reproducibility)."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_revision(self) -> str:
        revision = self.cleaned_data["revision"].strip()
        if revision and (problem := revision_error(revision)):
            raise forms.ValidationError(problem.split(": ", 1)[-1])
        return revision


class BaseModelUploadForm(forms.Form):
    name = forms.CharField(max_length=100)
    file = forms.FileField(
        label="Model archive",
        help_text=".zip, .tar or .tar.gz of the model folder: config.json, *.safetensors weights "
        "and tokenizer files. Pickle weights (.bin, .pt) are refused.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
