"""Build hook for the one C extension; everything else is declared in pyproject.toml.

`processors._wirewalk` is the privacy processors' wire walker in C (see the comment at the top of
processors/_wirewalk.c). It is optional: where no C compiler is available the install still
succeeds and `processors.attrwalk` uses its pure-Python walker (same output, slower). `make test`
checks that it was built (tests/unit/test_packaging.py).
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "processors._wirewalk",
            ["processors/_wirewalk.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                "-Wno-unused-parameter", "-Wno-cast-function-type"],
        ),
    ],
)
