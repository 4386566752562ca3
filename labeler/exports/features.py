"""Dataset features in the form `datasets` itself writes them, built without importing it.

`import datasets` costs a second and a half of CPU (pandas, huggingface_hub, fsspec...),
more than writing a hundred thousand rows. An export declares its columns here, as the
JSON that `datasets.Features.to_dict()` gives and that every saved dataset carries in
its `dataset_info.json` and Arrow schema; the Arrow types follow from that JSON the way
`datasets` derives them. `to_datasets` turns it into real `datasets.Features` where a
path does need the library (Parquet and JSON Lines writers, a label it must parse).
`tests/test_hf_features.py` holds both forms equal for every column an export writes.

A feature is a dict: ``{"dtype": D, "_type": "Value"}``, ``{"names": [...], "_type":
"ClassLabel"}``, ``{"feature": F, "_type": "List"}``, or a plain dict of named features
(a struct).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

Feature = dict[str, Any]
Features = dict[str, Feature]


def value(dtype: str) -> Feature:
    return {"dtype": dtype, "_type": "Value"}


def class_label(names: Iterable[str]) -> Feature:
    return {"names": list(names), "_type": "ClassLabel"}


def list_of(item: Feature) -> Feature:
    return {"feature": item, "_type": "List"}


def kind(feature: Feature) -> str:
    """ "Value", "ClassLabel", "List", or "struct" for a plain dict of named features."""
    return str(feature.get("_type", "struct"))


# The Arrow type of each Value dtype an export declares (datasets' `string_to_arrow`).
_ARROW_DTYPES = {
    "string": "string",
    "bool": "bool_",
    "int64": "int64",
    "float64": "float64",
    "float32": "float32",
    "uint8": "uint8",
    "binary": "binary",
}


def arrow_type(feature: Feature) -> pa.DataType:
    import pyarrow as pa

    t = kind(feature)
    if t == "Value":
        dtype = feature["dtype"]
        if dtype not in _ARROW_DTYPES:
            raise ValueError(f"no Arrow type declared for the dtype {dtype!r}")
        return getattr(pa, _ARROW_DTYPES[dtype])()
    if t == "ClassLabel":
        return pa.int64()
    if t == "List":
        return pa.list_(arrow_type(feature["feature"]))
    if t == "struct":
        return pa.struct([(name, arrow_type(f)) for name, f in feature.items()])
    raise ValueError(f"unknown feature type {t!r}")


def arrow_schema(features: Mapping[str, Feature]) -> pa.Schema:
    """The schema `datasets.ArrowWriter` writes: the columns' types, and the features
    under the `huggingface` key, which `load_from_disk` reads them back from."""
    import pyarrow as pa

    metadata = {"info": {"features": dict(features)}}
    return pa.schema([(name, arrow_type(f)) for name, f in features.items()]).with_metadata(
        {"huggingface": json.dumps(metadata)}
    )


def to_datasets(features: Mapping[str, Feature]) -> datasets.Features:
    import datasets

    return datasets.Features.from_dict(dict(features))
