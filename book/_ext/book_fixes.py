"""Small Sphinx fixes for this book, so every page loads without console errors.

sphinx-thebe and sphinx-togglebutton register their inline scripts twice under Jupyter Book 1 (once
with filename None, once with ""), and the second THEBE_JS_URL
declaration fails with "Identifier 'THEBE_JS_URL' has already been declared": keep each script once.
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", str(script)) or "", getattr(script, "priority", 0),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if "script_files" in context:
        context["script_files"][:] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
