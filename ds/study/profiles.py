"""Study profiles: named parameter sets for the five chapters, kept in one YAML file.

`profiles.yaml` at the repository root maps a profile name to the chapters' parameters. A profile
may start from another with `extends: NAME` and override some keys. Keys the runner reads itself
(not passed to notebooks): description, extends, piece_minutes (end a piece of the run
after this many minutes; rerun to continue), publish (false: `python -m ds.study publish`
refuses the profile), chapters (the profile is made of these first chapters only, e.g.
[01_observation] for a profile that trains a base network and runs the observation; it has no
book of its own, and publishing it writes its tables and networks only).
"""
from __future__ import annotations

import numbers
from pathlib import Path

import yaml

from .layout import CHAPTERS, NOTEBOOKS, PROFILES_FILE, notebook_source

RUNNER_KEYS = ("description", "extends", "piece_minutes", "publish", "chapters")


class ProfileError(ValueError):
    """An unknown profile, a malformed profiles file, or a parameter no chapter declares."""


def read_profiles(path: str | Path | None = None) -> dict[str, dict]:
    """Every profile in `path` (default: profiles.yaml at the repository root), as written."""
    path = Path(path) if path else PROFILES_FILE
    if not path.is_file():
        raise ProfileError(f"profiles file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ProfileError(f"{path} must map profile names to mappings of parameters")
    return data


def load_profile(name: str, path: str | Path | None = None) -> dict:
    """The parameters of profile `name`, with `extends` resolved (the child's keys win)."""
    profiles = read_profiles(path)
    chain, current = [], name
    while current is not None:
        if current not in profiles:
            known = ", ".join(sorted(profiles))
            what = f"profile {current!r}" + (f" (extended by {chain[-1]!r})" if chain else "")
            raise ProfileError(f"unknown {what}; known profiles: {known}. "
                               f"Add one to {Path(path) if path else PROFILES_FILE}.")
        if current in chain:
            raise ProfileError(f"profiles extend each other in a loop: {' -> '.join(chain + [current])}")
        chain.append(current)
        current = profiles[current].get("extends")
    merged: dict = {}
    for profile in reversed(chain):
        merged.update(profiles[profile])
    merged.pop("extends", None)
    merged["profile"] = name
    check_runner_keys(merged)
    return merged


def profile_chapters(profile: dict) -> tuple[str, ...]:
    """The chapters a run of `profile` is made of: its `chapters` key, else all five."""
    return tuple(profile.get("chapters") or CHAPTERS)


def covers_study(profile: dict) -> bool:
    """Whether the profile runs every chapter (only such a run has a book)."""
    return profile_chapters(profile) == CHAPTERS


def check_runner_keys(profile: dict) -> None:
    """Reject runner settings that cannot work, naming the profile, the value and the fix."""
    chapters = profile.get("chapters")
    if chapters is not None:
        prefixes = [list(CHAPTERS[:n]) for n in range(1, len(CHAPTERS) + 1)]
        if chapters not in prefixes:
            raise ProfileError(f"profile {profile.get('profile')!r}: chapters must be the first chapters in order "
                               f"(each needs those before it), e.g. [{CHAPTERS[0]}] or [{', '.join(CHAPTERS[:2])}]; "
                               f"got {chapters!r}; remove the key to run all five")
    minutes = profile.get("piece_minutes")
    if minutes is None:
        return
    if isinstance(minutes, bool) or not isinstance(minutes, numbers.Real) or not minutes > 0:
        raise ProfileError(f"profile {profile.get('profile')!r}: piece_minutes must be a positive number of "
                           f"minutes (the length of one piece of the run), got {minutes!r}; remove the key to "
                           f"run without pieces")


def notebook_parameters(profile: dict) -> dict:
    """The profile without the keys the runner keeps for itself."""
    return {k: v for k, v in profile.items() if k not in RUNNER_KEYS}


def declared_parameters(chapter: str, notebooks: Path = NOTEBOOKS) -> dict:
    """The names and defaults of a chapter notebook's `parameters` cell (via papermill)."""
    import papermill  # optional dependency (the `study` extra); ds.study imports without it
    return papermill.inspect_notebook(str(notebook_source(chapter, notebooks)))


def chapter_parameters(profile: dict, run_dir: str | Path, notebooks: Path = NOTEBOOKS) -> dict[str, dict]:
    """Per chapter, the profile's values for the parameters that chapter declares, and `run_dir`.

    A profile key that no chapter declares is a typo or a stale name: an error that lists them.
    """
    values = dict(notebook_parameters(profile), run_dir=str(run_dir))
    declared = {chapter: declared_parameters(chapter, notebooks) for chapter in CHAPTERS}
    known = set().union(*declared.values())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ProfileError(f"profile {profile['profile']!r} sets {', '.join(unknown)}, which no chapter "
                           f"declares; chapters take: {', '.join(sorted(known))}")
    return {chapter: {k: v for k, v in values.items() if k in names} for chapter, names in declared.items()}
