"""``containerbatch image``: helpers for container images (recipe conversion)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from containerbatch.cli.common import err, out

image_app = typer.Typer(help="Container image helpers.", no_args_is_help=True)


@image_app.command("convert")
def convert(
    dockerfile: Annotated[Path, typer.Argument(help="The Dockerfile to translate.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the definition file here (default: stdout).")
    ] = None,
    bootstrap: Annotated[
        str,
        typer.Option(
            help="docker (base image from a registry), docker-daemon (from the local engine) or docker-archive."
        ),
    ] = "docker",
    base_archive: Annotated[
        Path | None,
        typer.Option(help="The base image as a `docker save` tar file (bootstrap docker-archive; no engine needed)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Translate a Dockerfile into an Apptainer/Singularity definition file (offline, with spython).

    Build the SIF from it on a machine with Apptainer: ``apptainer build image.sif recipe.def``.
    """
    from containerbatch.images import convert_dockerfile

    if base_archive is not None and bootstrap == "docker":
        bootstrap = "docker-archive"
    text = convert_dockerfile(dockerfile, bootstrap=bootstrap, base_archive=str(base_archive) if base_archive else None)
    if output is None:
        out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return
    if output.exists() and not force:
        from containerbatch.errors import ConfigError

        raise ConfigError(f"{output} exists; pass --force to overwrite it")
    output.write_text(text)
    err.print(
        f"wrote {output}; build it with: apptainer build {output.with_suffix('.sif').name} {output}",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the ``image`` command group to ``app``."""
    app.add_typer(image_app, name="image")
