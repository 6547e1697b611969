"""``fabric engine ...``: engine tooling (building a local test model)."""

from __future__ import annotations

from pathlib import Path

import click

from engines.hf.checkpoint import DEFAULT_VOCAB_SIZE, SIZES, build_checkpoint


@click.group()
def engine() -> None:
    """Engine tooling."""


@engine.command("make-model")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the checkpoint to (created; files in it are overwritten).",
)
@click.option(
    "--size", type=click.Choice(list(SIZES)), default="tiny", show_default=True, help="Model shape."
)
@click.option("--seed", type=int, default=0, show_default=True, help="torch seed of the weights.")
@click.option(
    "--vocab-size",
    type=click.IntRange(2),
    default=DEFAULT_VOCAB_SIZE,
    show_default=True,
    help="Vocabulary; init the fleet with the same --vocab-size (or less).",
)
def make_model(out: Path, size: str, seed: int, vocab_size: int) -> None:
    """Build a small seeded Llama checkpoint for the hf engine. Downloads nothing.

    Random weights, real architecture: LlamaConfig + LlamaForCausalLM with a
    fixed torch seed, written with save_pretrained (no tokenizer).
    """
    try:
        import torch  # noqa: F401  (checked here for a clear message)
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise click.ClickException(
            f"make-model needs torch and transformers ({exc}); install them with: "
            "pip install 'inference-fabric[hf]'"
        ) from None
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    num_params = build_checkpoint(out, size=size, seed=seed, vocab_size=vocab_size)
    click.echo(
        f"wrote a {size} Llama checkpoint ({num_params:,} parameters, vocab {vocab_size}, "
        f"seed {seed}) to {out}"
    )
