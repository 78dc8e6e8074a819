"""`SafeHubMixin`: the Hub side of every tokenizer model.

- `from_pretrained` loads `config.json` + safetensors only, never a pickle, and names what is wrong
  (a missing or corrupt file, a config.json that is not a JSON object, weights that do not match
  the config or hold NaN / infinite values, a config of another type);
- `save_pretrained(..., push_to_hub=True)` and `push_to_hub` publish with the vqtok model card.

It sits before `transformers.PreTrainedModel` in the base model's bases, so `super()` reaches
transformers' own methods.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

from huggingface_hub import create_repo
from safetensors import SafetensorError

from .loading import (
    HUB_DOWNLOAD_KWARGS,
    check_config_file,
    check_finite_weights,
    check_loading_info,
    check_local_folder,
    check_safetensors_weights,
    reinitialise_mismatched,
)
from . import earlier_versions
from .card_fields import CARD_INPUT_NAMES, CardInputs
from .model_card import render_model_card

# Keywords both save_pretrained and push_to_hub take: save_pretrained keeps them and passes them on.
_SHARED_WITH_SAVE = ("token", "max_shard_size")



class SafeHubMixin:
    """Safe `from_pretrained`, and `save_pretrained` / `push_to_hub` with a model card."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load from a directory or Hub repo: `config.json` + safetensors weights only (never pickle).

        Hub arguments (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`,
        `subfolder`, `proxies`) pass through to `transformers.PreTrainedModel.from_pretrained`.

        Raises:
            OSError: no `config.json`; no `model.safetensors` (also when the only checkpoint is a
                pickle such as `pytorch_model.bin`, which is never opened); a corrupt safetensors file.
            ValueError: a `config.json` that is not a JSON object or is of another tokenizer type;
                weights that do not match the config (tensor shapes differ, tensors missing or
                unexpected); a parameter or buffer holding NaN or an infinity (each such tensor is
                named with its count of non-finite values, with the weights file). Nothing is
                silently re-initialised; `ignore_mismatched_sizes=True` re-initialises
                shape-mismatched tensors on purpose.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("vqtok loads safetensors weights only; use_safetensors=False is not supported")
        kwargs["use_safetensors"] = True
        source = os.fspath(pretrained_model_name_or_path)
        if not os.path.isfile(source):
            check_local_folder(pretrained_model_name_or_path, cls.__name__)
        if os.path.isfile(source):
            raise OSError(
                f"{source} is a file; pass the directory (or Hub repo id) holding config.json and model.safetensors"
            )
        download = {k: kwargs[k] for k in HUB_DOWNLOAD_KWARGS if k in kwargs}
        if kwargs.get("config") is None:
            check_config_file(source, download, cls.__name__, cls._loads_model_type())
        weights_path = check_safetensors_weights(source, download, kwargs.get("variant"))
        return_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        key_mapping = earlier_versions.tensor_renames(cls.config_class, source, download, kwargs.get("config"))
        try:
            # transformers 5 only logs missing/unexpected tensors; they are checked below.
            model, info = super().from_pretrained(
                source, *args, output_loading_info=True, ignore_mismatched_sizes=True, key_mapping=key_mapping, **kwargs
            )
        except (SafetensorError, RuntimeError) as error:
            if "safetensor" not in f"{type(error).__name__} {error}".lower() and not isinstance(error, SafetensorError):
                raise
            raise OSError(
                f"could not read the safetensors weights of {source}: the file is corrupt or truncated ({error})"
            ) from error
        # transformers would undo the renaming when saving; vqtok always saves today's names.
        if model.__dict__.pop("_weight_conversions", None):
            info = earlier_versions.complete_loaded_state(model, info)
        check_loading_info(source, info, allow_mismatch)
        reinitialise_mismatched(model, info)
        check_finite_weights(model, source, weights_path)
        return (model, info) if return_info else model

    def render_card(self, **card_kwargs):
        """The model card `push_to_hub` uploads (keywords as in `vqtok.hub.render_model_card`); a model
        that is not a tokenizer (the prior) renders its own."""
        return render_model_card(self, **card_kwargs)

    @classmethod
    def _loads_model_type(cls) -> str | None:
        """The `model_type` this class loads; None for a base class that defines no quantizer."""
        config_class = cls.config_class
        return config_class.model_type if getattr(config_class, "quantizer_class", None) is not None else None

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """`transformers`' `save_pretrained`; with `push_to_hub=True` the upload goes through
        `push_to_hub` (keywords `repo_id`, `commit_message`, `private`, `metrics`, ...), so the Hub repo
        gets the vqtok model card."""
        hub_kwargs = {k: kwargs.pop(k) for k in _push_to_hub_keywords() if k in kwargs} if push_to_hub else {}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if push_to_hub and kwargs.get("is_main_process", True):
            repo_id = hub_kwargs.pop("repo_id", None) or Path(save_directory).resolve().name
            for name in _SHARED_WITH_SAVE:
                if name in kwargs:
                    hub_kwargs[name] = kwargs[name]
            self.push_to_hub(repo_id, **hub_kwargs)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        **card_inputs,
    ):
        """Upload `config.json`, `model.safetensors` and a model card (`README.md`) to the Hub repo
        `repo_id`, creating the repo if needed.

        The card is `render_card`'s, rendered on every push (for a tokenizer from
        `model_cards/tokenizer_card.md`, see `vqtok.hub.render_model_card`) and replacing the repo's
        README.md; `card_inputs` are its keywords (`metrics`, `training_data`, `datasets`, `license`,
        `tags`, `eval_dataset`, `eval_split`: see `vqtok.hub.card_fields.CardInputs`). The other
        arguments are those of `transformers`' `push_to_hub` (`revision` is the branch to push to).
        Returns the `huggingface_hub.CommitInfo`; its `oid` is the commit to pin with
        `from_pretrained(..., revision=oid)`.
        """
        card_kwargs = {**card_inputs, "repo_id": repo_id}
        CardInputs.from_keywords(card_kwargs)  # bad arguments fail before any upload
        card = self.render_card(**card_kwargs)
        full_repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        if full_repo_id != repo_id:
            card = self.render_card(**{**card_kwargs, "repo_id": full_repo_id})
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir, max_shard_size=max_shard_size)
            card.save(os.path.join(tmp_dir, "README.md"))
            return self._upload_modified_files(
                tmp_dir,
                full_repo_id,
                files_timestamps={},
                commit_message=commit_message,
                token=token,
                create_pr=create_pr,
                revision=revision,
                commit_description=commit_description,
            )


def _push_to_hub_keywords() -> tuple[str, ...]:
    """The keywords of `save_pretrained(push_to_hub=True, ...)` that belong to `push_to_hub`: its own
    (read from its signature) and the model card's."""
    own = inspect.signature(SafeHubMixin.push_to_hub).parameters
    return (*CARD_INPUT_NAMES, *(name for name, p in own.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                                 and name not in _SHARED_WITH_SAVE))
