"""Output shared by the benchmark scripts: the JSON object and the markdown table to files."""


def write_outputs(text, md, json_out=None, md_out=None):
    """Write the benchmark's JSON text to ``json_out`` and its markdown to ``md_out`` (each if given)."""
    for path, content in ((json_out, text), (md_out, md)):
        if path:
            with open(path, "w") as fh:
                fh.write(content + "\n")
