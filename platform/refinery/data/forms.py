from django import forms

from refinery.data.models import DatasetKind


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Uploading to an existing name adds a new version.")
    kind = forms.ChoiceField(choices=DatasetKind.choices)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(help_text="JSONL, CSV or Parquet. Validated row by row before anything is stored.")
