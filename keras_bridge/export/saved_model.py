"""``format="tf_saved_model"``: a TF Serving SavedModel version folder."""

import json
import os

from keras_bridge.atomic_files import atomic_write, saved_model_or_empty
from keras_bridge.export.metadata import METADATA_FILE
from keras_bridge.export.signature import MEMBERS_SIGNATURE, serving_archive
from keras_bridge.messages import print_msg, warn


def export_saved_model(
    model, filepath, info, overwrite: bool = False, verbose: bool = True
) -> str:
    """Writes an inference model as a TF Serving SavedModel.

    See `keras_bridge.export` for the signatures. The SavedModel is
    written to a hidden staging folder beside ``filepath`` and renamed
    into place at the end (`keras_bridge.atomic_files.atomic_write`), so TF
    Serving (which watches ``<base>/<model_name>/`` for numbered version
    folders) never sees a half-written version.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        filepath: the version folder, e.g. ``"serving/digits/1"``.
        info: the metadata of the export
            (`keras_bridge.export.metadata.describe`).
        overwrite: replace an existing SavedModel (or empty folder) at
            ``filepath``; any other folder is refused.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> from keras_bridge.export.metadata import describe
    >>> members = ["mode_0", "type1_0-1_r0.5"]
    >>> model = ens.inference_model(members)
    >>> info = describe(model, members, ens.temperature)
    >>> path = export_saved_model(model, "serving/digits/1", info,
    ...     verbose=False)
    >>> sorted(os.listdir(path))
    ['assets', 'assets.extra', ..., 'saved_model.pb', 'variables']
    """
    path = os.path.abspath(os.fspath(filepath))
    if not os.path.basename(path).isdigit():
        warn(
            f"TF Serving only loads numbered version folders, "
            f"<base>/<model_name>/<version>; {path!r} does not end in a "
            "version number, so a server pointed at its parent will not "
            "see it.",
        )
    names = info["serving_names"]
    archive = serving_archive(model, names)
    with atomic_write(
        path, overwrite=overwrite, folder=True, replaces=saved_model_or_empty
    ) as staging:
        archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w") as handle:
            json.dump(info, handle, indent=2)
    if verbose:
        print_msg(
            f"Saved a SavedModel of {len(names)} members to {path} "
            f"(signatures: serving_default, {MEMBERS_SIGNATURE})."
        )
    return path


def read_saved_model_metadata(filepath) -> dict:
    """The metadata that `export_saved_model` wrote beside a SavedModel.

    Example:

    >>> path = ens.export("serving/digits/1", verbose=False,
    ...     members=["mode_0", "type1_0-1_r0.5"])
    >>> read_saved_model_metadata(path)["members"]
    ['mode_0', 'type1_0-1_r0.5']
    """
    path = os.path.join(os.fspath(filepath), "assets.extra", METADATA_FILE)
    with open(path) as handle:
        return json.load(handle)
