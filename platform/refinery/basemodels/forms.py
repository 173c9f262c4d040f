from django import forms

from refinery.basemodels.models import BaseModel


class BaseModelForm(forms.Form):
    name = forms.CharField(max_length=100)
    source = forms.ChoiceField(choices=BaseModel.Source.choices, initial=BaseModel.Source.HUB)
    name_or_path = forms.CharField(max_length=500, label="Hub id or local path",
                                   help_text="e.g. Qwen/Qwen2.5-0.5B-Instruct, or /models/my-llama on the workers")
    revision = forms.CharField(max_length=100, required=False, help_text="Hub branch, tag or commit (pin it for reproducibility).")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
