"""Each cleaner does what its docstring says (paper §2.1 preprocessing), and the registry is wired to configs."""

import pytest

from training.data import CLEANERS, apply_cleaners, get_cleaner, register_cleaner
from training.data.cleaners import code, dedup_lines, gutenberg, html_to_text, latex, strip_bom


def test_strip_bom_removes_marks_and_normalises_line_endings():
    assert strip_bom("\ufeffHello\r\nworld\rend\ufeff") == "Hello\nworld\nend"


def test_dedup_lines_keeps_first_occurrence_and_blank_lines():
    text = "Home | About\nFirst paragraph.\n\nHome | About\nSecond paragraph.\n\n  First paragraph.  \nEnd"
    assert dedup_lines(text) == "Home | About\nFirst paragraph.\n\nSecond paragraph.\n\nEnd"


def test_gutenberg_strips_bom_header_license_and_footer():
    book = (
        "\ufeffThe Project Gutenberg eBook of A Tale\r\n\r\nThis eBook is for the use of anyone anywhere.\r\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***\r\n\r\nCHAPTER I.\r\nOnce upon a time.\r\n\r\n"
        "THE END\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK A TALE ***\r\n\r\nSection 1. General Terms of Use\r\n"
    )
    assert gutenberg(book) == "CHAPTER I.\nOnce upon a time.\n\nTHE END\n"


def test_gutenberg_handles_older_this_ebook_markers_and_plain_text():
    old = ("header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nbody\n"
           "End of the Project Gutenberg EBook of X\nlegal")
    assert gutenberg(old) == "body\n"
    assert gutenberg("no markers here\n") == "no markers here\n"  # a text without the frame is kept whole


@pytest.mark.parametrize("header", [
    "/*\n * Copyright (c) 2020 Someone\n * Licensed under the Apache License, Version 2.0\n */\n",
    "// SPDX-License-Identifier: MIT\n// Copyright 2021 Foo\n\n",
    "# Copyright 2019 Bar. All rights reserved.\n# Permission is hereby granted, free of charge...\n",
])
def test_code_removes_license_header(header):
    body = "import os\n\ndef f():\n    return 1\n"
    assert code(header + body) == body


def test_code_keeps_shebang_and_ordinary_leading_comments():
    script = "#!/usr/bin/env python\n# Copyright 2020 X, MIT license\nprint('hi')\n"
    assert code(script) == "#!/usr/bin/env python\nprint('hi')\n"
    documented = "# Compute the answer.\nx = 42\n"
    assert code(documented) == documented  # not a license: it is part of the program's documentation


@pytest.mark.parametrize("source, kept", [
    # C: a `#` line is a preprocessor directive, never a comment; deleting it changes what the file compiles to.
    ("// Copyright (c) 2020 Foo. MIT License\n#include <stdio.h>\n#define N 10\n\nint main(void) { return N; }\n",
     "#include <stdio.h>\n#define N 10\n\nint main(void) { return N; }\n"),
    ("// SPDX-License-Identifier: MIT\n#import <Foundation/Foundation.h>\nint x;\n",  # Objective-C
     "#import <Foundation/Foundation.h>\nint x;\n"),
    # a file that opens with directives has no leading comment block: the license further down stays with them
    ("#ifndef FOO_H\n#define FOO_H\n// Copyright (c) 2020 Foo\nint f(void);\n#endif\n", None),
    ("#pragma once\n// Licensed under the MIT License\nint g(void);\n", None),
])
def test_code_keeps_preprocessor_directives(source, kept):
    assert code(source) == (source if kept is None else kept)


def test_code_still_removes_hash_license_headers_of_scripts():
    # Python/shell: `#` is the comment marker, so a `# Copyright` block is the header to drop (shebang kept)
    script = "#!/bin/sh\n# Copyright (c) 2020 X\n#\n# SPDX-License-Identifier: MIT\n\nset -e\n"
    assert code(script) == "#!/bin/sh\nset -e\n"
    python = "# -*- coding: utf-8 -*-\n# Copyright 2021 Y. Licensed under the Apache License 2.0\nimport os\n"
    assert code(python) == "# -*- coding: utf-8 -*-\nimport os\n"


def test_latex_drops_preamble_comments_bibliography_and_expands_macros():
    paper = (
        "\\documentclass{article}\n\\newcommand{\\R}{\\mathbb{R}}\n\\def\\model{LLaMA}\n"
        "\\begin{document}\n\\maketitle\n"
        "\\section{Introduction}\nWe train \\model{} on $x \\in \\R$. % a private remark\n"
        "Costs 50\\% less.\n%full-line comment\n"
        "\\section{Method}\nSee \\cite{a}.\n"
        "\\begin{thebibliography}{9}\n\\bibitem{a} A. Author.\n\\end{thebibliography}\n\\end{document}\n"
    )
    assert latex(paper) == (
        "\\section{Introduction}\nWe train LLaMA{} on $x \\in \\mathbb{R}$. \nCosts 50\\% less.\n\n"
        "\\section{Method}\nSee \\cite{a}.\n"
    )


def test_html_removes_tags_scripts_and_unescapes():
    page = ("<html><head><title>t</title></head><body><script>var x=1;</script><p>Use <code>a &lt; b</code>"
            "&amp; more.</p><!-- c --><p>Second<br/>line</p></body></html>")
    assert html_to_text(page) == "Use a < b& more.\nSecond\nline\n"


@pytest.mark.parametrize("text", [
    "std::vector<int> v; if (a<b && b>c) return;",  # C++ templates and comparisons
    "List<String> names = new ArrayList<>(); Map<String, Object> m;",
    "List<Object> items;",  # `object` is an HTML element, but a Capitalised name is a type, not a tag
    "x < y > z and 0<i<n",  # maths: no tag name right after `<`
    "template <typename T> T max(T a, T b); Box<T>",
    "#include <stdio.h>\n#include <map>\n#include <span>",  # headers, even ones named like HTML elements
])
def test_html_keeps_angle_brackets_that_are_not_tags(text):
    # RedPajama's Stack Exchange text is already plain text full of code: only real HTML may go
    assert html_to_text(text) == text + "\n"


def test_html_removes_real_tags_whatever_their_case_and_attributes():
    page = '<p>Use <a href="x">link</a>,<br/><code>x</code> and <DIV class=y>more</DIV><!-- note -->.</p>'
    assert html_to_text(page) == "Use link,\nx and more\n.\n"
    mixed = "<p>if a<b && b>c then <code>List&lt;String&gt;</code> <img src='i.png' alt=\"a>b\"/></p>"
    assert html_to_text(mixed) == "if a<b && b>c then List<String>\n"  # tags gone, the comparison kept


def test_registry_names_every_cleaner_and_applies_in_order():
    assert {"strip_bom", "dedup_lines", "gutenberg", "code", "latex", "html"} <= set(CLEANERS)
    assert get_cleaner("html") is html_to_text
    with pytest.raises(ValueError, match="Unknown cleaner 'nope'.*register_cleaner"):
        get_cleaner("nope")

    @register_cleaner("test_upper")
    def upper(text: str) -> str:
        return text.upper()

    try:
        # order matters: the two lines only become equal (and deduplicated) once the tags are gone
        assert apply_cleaners("<b>x</b>\n<i>x</i>", ["html", "dedup_lines", "test_upper"]) == "X\n"
        assert apply_cleaners("<b>x</b>\n<i>x</i>", ["dedup_lines", "html", "test_upper"]) == "X\nX\n"
    finally:
        del CLEANERS["test_upper"]
