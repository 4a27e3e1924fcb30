"""Dataset loading scripts: refused before `datasets` is called, with what to do instead.

datasets 4 dropped loading scripts ("Dataset scripts are no longer supported, but found X.py"), and segtune
installs datasets 5. A script dataset is recognised without the network where possible:

- a local `.py` file, or a local folder holding a `*.py` script and no data files `datasets` could read;
- the well-known Hub ids below, whose repositories hold only a script (checked on their Hub file listings);
- otherwise, datasets' own error is translated when it happens (`script_error_from`).

ADE20K's `scene_parse_150` has its own advice: the official ADEChallengeData2016 folder, `data.source: ade20k`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import DatasetError

ADE20K_ZIP = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"

# Hub ids (lower case) -> their script. scene_parse_150 redirects to zhoubolei/scene_parse_150, whose main
# branch holds only README.md and scene_parse_150.py; fuliucansheng/pascal_voc holds pascal_voc.py and tarballs.
KNOWN_SCRIPTS = {
    "scene_parse_150": "scene_parse_150.py",
    "zhoubolei/scene_parse_150": "scene_parse_150.py",
    "fuliucansheng/pascal_voc": "pascal_voc.py",
}
_ADE20K_SCRIPTS = {"scene_parse_150.py"}

# Files `datasets` reads without a script (packaged builders); anything else beside a *.py means a script dataset.
_DATA_SUFFIXES = {".parquet", ".arrow", ".csv", ".tsv", ".json", ".jsonl", ".tar", ".png", ".jpg", ".jpeg", ".webp"}
_METADATA_FILES = {"dataset_infos.json", "dataset_info.json", "id2label.json", "label2id.json"}
_DATASETS_MESSAGE = re.compile(r"Dataset scripts are no longer supported, but found (\S+)")


def refuse_script_dataset(path: str) -> None:
    """Raises DatasetError when `path` is a loading-script dataset that can be recognised offline.

    Raises:
        DatasetError: `path` is a `.py` file, a local folder holding a `*.py` script and no data files, or a
            known script-only Hub id; the message names the script and what to use instead.
    """
    local = Path(path).expanduser()
    if local.is_file() and local.suffix == ".py":
        raise script_error(path, local.name)
    if local.is_dir():
        scripts = sorted(p.name for p in local.glob("*.py"))
        if scripts and not _has_data_files(local):
            raise script_error(path, scripts[0])
        return
    script = KNOWN_SCRIPTS.get(path.strip("/").lower())
    if script is not None:
        raise script_error(path, script)


def script_error_from(error: Exception, path: str) -> DatasetError | None:
    """datasets' "Dataset scripts are no longer supported" error as segtune's; None for any other error."""
    match = _DATASETS_MESSAGE.search(str(error))
    return script_error(path, match[1]) if match else None


def script_error(path: str, script: str) -> DatasetError:
    """The DatasetError for a loading-script dataset: which script, and what to use instead."""
    found = (
        f"data.path {path!r} is a dataset loading script ({script}); datasets >= 4 no longer runs loading "
        "scripts, and segtune does not downgrade datasets."
    )
    if script in _ADE20K_SCRIPTS:
        return DatasetError(
            f"{found} For ADE20K (SceneParse150), download {ADE20K_ZIP}, unzip it (it holds "
            "ADEChallengeData2016/images and ADEChallengeData2016/annotations) and set data.source: ade20k and "
            "data.path: <the ADEChallengeData2016 folder> (default data/ADEChallengeData2016)."
        )
    return DatasetError(
        f"{found} Use a copy of the dataset in data files instead: a Hub dataset of Parquet files, or a folder "
        "written by `DatasetDict.save_to_disk` (e.g. from an environment that still runs the script), and point "
        "data.path at it."
    )


def _has_data_files(folder: Path) -> bool:
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative) or path.name in _METADATA_FILES:
            continue
        if path.suffix.lower() in _DATA_SUFFIXES and path.is_file():
            return True
    return False
