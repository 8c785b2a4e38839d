#!/usr/bin/env python3
"""Validates OCSF events (JSON Lines) against the vendored OCSF schema source (schema-1.1.0/,
the ocsf/ocsf-schema repository at tag v1.1.0, Apache-2.0: see its LICENSE).

It reads the schema the way the OCSF compiler does: a class's attributes are those of its
`extends` chain and `$include`d files, each attribute's type, array-ness and enum come from
dictionary.json, refined by the class or object (enums merge); profile attributes count only when
the profile is named in `metadata.profiles`. Each event is checked for: no attribute the class or
object does not define, every `required` attribute present, each value of its type (integer,
float, string with the type's regex and maximum length, boolean, array, object recursively), enum
values among the defined ones, objects' `at_least_one`/`just_one` constraints, and the computed
identifiers (`class_uid` = category_uid * 1000 + the class's uid, `type_uid` = class_uid * 100 +
activity_id).

Usage: validate.py CLASS FILE.jsonl...  (CLASS: e.g. detection_finding). Prints one line per
error and exits 1 if any, else prints "N events valid" and exits 0.
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "schema-1.1.0")


def load(rel):
    with open(os.path.join(SCHEMA, rel)) as f:
        return json.load(f)


def merge(into, other):
    """Deep-merges dict `other` into `into` (other wins on scalars)."""
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v if not isinstance(v, dict) else json.loads(json.dumps(v))
    return into


def attributes(doc):
    """The attributes of a class/object/include file, its `$include`s resolved."""
    out = {}
    own = doc.get("attributes", {})
    for inc in own.get("$include", []):
        inc_doc = load(inc)
        inc_attrs = attributes(inc_doc)
        if inc_doc.get("meta") == "profile":
            for a in inc_attrs.values():
                a.setdefault("profile", inc_doc["name"])
        merge(out, inc_attrs)
    merge(out, {k: v for k, v in own.items() if k != "$include"})
    return out


def index(directory):
    by_name = {}
    for root, _, files in os.walk(os.path.join(SCHEMA, directory)):
        for f in files:
            if f.endswith(".json"):
                rel = os.path.relpath(os.path.join(root, f), SCHEMA)
                by_name[load(rel)["name"]] = rel
    return by_name


EVENTS = index("events")
OBJECTS = index("objects")
DICTIONARY = load("dictionary.json")
DICT_ATTRS = DICTIONARY["attributes"]
TYPES = DICTIONARY["types"]["attributes"]
CATEGORIES = {c["uid"]: name for name, c in load("categories.json")["attributes"].items()}


def resolved(kind, name):
    """(attributes, constraints, document) of a class or object with its `extends` chain."""
    index_ = EVENTS if kind == "event" else OBJECTS
    doc = load(index_[name])
    chain = [doc]
    while doc.get("extends") and doc["extends"] in index_:
        doc = load(index_[doc["extends"]])
        chain.append(doc)
    attrs, constraints = {}, {}
    for d in reversed(chain):
        merge(attrs, attributes(d))
        constraints.update(d.get("constraints", {}))
    for name_, a in attrs.items():
        base = json.loads(json.dumps(DICT_ATTRS.get(name_, {})))
        attrs[name_] = merge(base, a)
    return attrs, constraints, chain[0]


def base_type(t):
    """The primitive type (`string_t`, `integer_t`, ...) a dictionary type reduces to, and the
    regex and maximum length it adds on the way."""
    regexes, max_len = [], None
    while t in TYPES:
        spec = TYPES[t]
        if spec.get("regex"):
            regexes.append(spec["regex"])
        if spec.get("max_len") and max_len is None:
            max_len = spec["max_len"]
        if not spec.get("type"):
            break
        t = spec["type"]
    return t, regexes, max_len


class Checker:
    def __init__(self, profiles):
        self.profiles = set(profiles)
        self.errors = []

    def err(self, path, msg):
        self.errors.append(f"{path}: {msg}")

    def check_value(self, path, attr, value):
        t = attr.get("type")
        if t is None:
            self.err(path, "attribute has no type in the schema")
            return
        if attr.get("is_array"):
            if not isinstance(value, list):
                self.err(path, f"expected an array of {t}")
                return
            for i, v in enumerate(value):
                self.check_scalar(f"{path}[{i}]", attr, t, v)
        else:
            self.check_scalar(path, attr, t, value)

    def check_scalar(self, path, attr, t, value):
        if t in TYPES:
            prim, regexes, max_len = base_type(t)
            ok = {
                "string_t": isinstance(value, str),
                "integer_t": isinstance(value, int) and not isinstance(value, bool),
                "long_t": isinstance(value, int) and not isinstance(value, bool),
                "float_t": isinstance(value, (int, float)) and not isinstance(value, bool),
                "boolean_t": isinstance(value, bool),
                "json_t": True,
            }.get(prim)
            if ok is None:
                self.err(path, f"unknown primitive type {prim}")
            elif not ok:
                self.err(path, f"{value!r} is not of type {t} ({prim})")
            elif isinstance(value, str):
                if max_len is not None and len(value) > max_len:
                    self.err(path, f"longer than {max_len} characters ({t})")
                for r in regexes:
                    if not re.search(r, value):
                        self.err(path, f"{value!r} does not match the {t} pattern")
            # The compiler generates the enums of the class and category ids from the classes
            # and categories; `check_event` checks those ids against them.
            generated = path.count(".") == 1 and path.endswith((".class_uid", ".category_uid"))
            if "enum" in attr and ok and not generated:
                if str(value) not in attr["enum"]:
                    self.err(path, f"{value!r} is not among the values {sorted(attr['enum'])}")
            return
        # An object type.
        if not isinstance(value, dict):
            self.err(path, f"expected an object of type {t}")
            return
        if t == "object":
            return  # OCSF's generic object (`unmapped`): any attributes.
        attrs, constraints, _ = resolved("object", t)
        self.check_object(path, attrs, constraints, value)

    def applies(self, attr):
        p = attr.get("profile")
        return p is None or p in self.profiles

    def check_object(self, path, attrs, constraints, value):
        for k, v in value.items():
            a = attrs.get(k)
            if a is None:
                self.err(f"{path}.{k}", "not an attribute of this class or object")
            elif not self.applies(a):
                self.err(f"{path}.{k}", f"needs the {a['profile']} profile in metadata.profiles")
            else:
                self.check_value(f"{path}.{k}", a, v)
        for k, a in attrs.items():
            if a.get("requirement") == "required" and self.applies(a) and k not in value:
                self.err(f"{path}.{k}", "required attribute missing")
        if "at_least_one" in constraints:
            if not any(k in value for k in constraints["at_least_one"]):
                self.err(path, f"needs at least one of {constraints['at_least_one']}")
        if "just_one" in constraints:
            if sum(k in value for k in constraints["just_one"]) != 1:
                self.err(path, f"needs exactly one of {constraints['just_one']}")


def check_event(class_name, event):
    attrs, constraints, doc = resolved("event", class_name)
    profiles = event.get("metadata", {}).get("profiles", []) or []
    c = Checker(profiles)
    c.check_object(class_name, attrs, constraints, event)
    category = CATEGORIES.get(event.get("category_uid"))
    if category is None or doc.get("category") != category:
        c.err("category_uid", f"{event.get('category_uid')} is not the class's category")
    else:
        cat_uid = event["category_uid"]
        if event.get("class_uid") != cat_uid * 1000 + doc["uid"]:
            c.err("class_uid", f"expected {cat_uid * 1000 + doc['uid']}")
        if event.get("type_uid") != event.get("class_uid", 0) * 100 + event.get("activity_id", -1):
            c.err("type_uid", "expected class_uid * 100 + activity_id")
    return c.errors


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    class_name, files = sys.argv[1], sys.argv[2:]
    errors, n = [], 0
    for path in files:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                n += 1
                for e in check_event(class_name, json.loads(line)):
                    errors.append(f"{path}:{lineno}: {e}")
    for e in errors:
        print(e)
    if errors:
        return 1
    if n == 0:
        print("no events to validate")
        return 1
    print(f"{n} events valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
