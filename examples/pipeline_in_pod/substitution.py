"""Tekton's variable substitution (``pkg/reconciler/taskrun/resources/apply.go``), as text.

Values are flattened into ``$(key)`` replacements (``params.x``, ``params.x[1]``,
``params.x.key``, ``context.pipelineRun.name``...) and arrays, which only expand where a
list element is exactly ``$(params.x[*])``. Unknown variables are left as written (result
references are rewritten later, into what the entrypoint substitutes at run time).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from examples.pipeline_in_pod.model import ParamValue

__all__ = ["Scope"]

# $(params['x']), $(params["x"]) and $(params['x'][*]) are spelled $(params.x...) below.
_BRACKETS = re.compile(r"""\$\((params|tasks|results|workspaces)\[['"]([^'"\]]+)['"]\]""")
_VARIABLE = re.compile(r"\$\(([^()]+)\)")


def _normalize(text: str) -> str:
    return _BRACKETS.sub(lambda m: f"$({m.group(1)}.{m.group(2)}", text)


@dataclass
class Scope:
    """Replacements for ``$(...)`` variables: strings, and arrays for ``[*]``."""

    strings: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    objects: dict[str, dict[str, str]] = field(default_factory=dict)

    def child(self) -> Scope:
        """A copy to add to (an inner scope overriding this one)."""
        return Scope(dict(self.strings), dict(self.arrays), dict(self.objects))

    def add_param(self, name: str, value: ParamValue) -> None:
        """``$(params.<name>)`` with Tekton's forms for each type."""
        self.add_value(f"params.{name}", value)

    def add_value(self, key: str, value: ParamValue) -> None:
        """``$(<key>)``, ``$(<key>[i])``, ``$(<key>[*])``, ``$(<key>.k)`` for ``value``."""
        if isinstance(value, str):
            self.strings[key] = value
            return
        if isinstance(value, list):
            self.arrays[f"{key}[*]"] = list(value)
            for index, item in enumerate(value):
                self.strings[f"{key}[{index}]"] = item
            return
        self.objects[f"{key}[*]"] = dict(value)
        for key_name, item in value.items():
            self.strings[f"{key}.{key_name}"] = item

    def string(self, text: str) -> str:
        """``text`` with every known string variable replaced."""

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in self.strings:
                return self.strings[name]
            if name in self.arrays:  # an array inside a longer string: Tekton joins with " "
                return " ".join(self.arrays[name])
            return match.group(0)

        return _VARIABLE.sub(replace, _normalize(text))

    def strings_list(self, items: Sequence[str]) -> list[str]:
        """A command or args list: an element ``$(x[*])`` expands into the array's items."""
        out: list[str] = []
        for item in items:
            normalized = _normalize(item)
            match = _VARIABLE.fullmatch(normalized)
            if match is not None and match.group(1) in self.arrays:
                out.extend(self.arrays[match.group(1)])
            else:
                out.append(self.string(normalized))
        return out

    def value(self, value: ParamValue) -> ParamValue:
        """A param value (string, array or object) with variables replaced."""
        if isinstance(value, str):
            whole = _VARIABLE.fullmatch(_normalize(value))
            if whole is not None and whole.group(1) in self.arrays:
                return list(self.arrays[whole.group(1)])
            if whole is not None and whole.group(1) in self.objects:
                return dict(self.objects[whole.group(1)])
            return self.string(value)
        if isinstance(value, list):
            return self.strings_list(value)
        return {key: self.string(item) for key, item in value.items()}
