"""Blocks whose activations are gone, in merge-ready form, and their merged equivalents.

The border trap (docs/design.md, the border trap): the original block zero-pads the *output of its first
conv*, which holds that conv's bias, while one merged conv zero-pads the *input*. A `LinearRun`
puts all zero padding of the run on its first conv and runs every later conv without padding, so
the network one finetunes is exactly the network one deploys, borders included. A skip connection
then adds the stage input shifted onto the stage output's grid (zero-padded on the first stage,
cropped on later ones).
"""
from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import Affine, add_identity, compose_all, fold_batchnorm, to_conv


class LinearStage(nn.Module):
    """One former block: convs each followed by its norm (Identity once folded), optional skip.

    `own_paddings` holds the zero padding each conv had in the original block (the convs
    themselves carry the run's hoisted padding instead). `skip_shift` > 0 zero-pads the input for
    the skip, < 0 crops it (see module docstring). `mergeable` is False for a depthwise-separable
    (expansion 1) block, which ds.merge keeps as two convs by default.
    """

    def __init__(self, convs: list[nn.Conv2d], norms: list[nn.Module], own_paddings: tuple[int, ...],
                 skip_shift: int | None = None, drop_path: nn.Module | None = None,
                 mergeable: bool = True):
        super().__init__()
        if not len(convs) == len(norms) == len(own_paddings):
            raise ValueError("a LinearStage needs one norm and one original padding per conv")
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.own_paddings = tuple(own_paddings)
        self.has_skip = skip_shift is not None
        self.skip_shift = skip_shift or 0
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        self.mergeable = mergeable

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            y = self.after_norm(index, norm(conv(y)))
        if self.has_skip:
            shortcut = F.pad(x, [self.skip_shift] * 4) if self.skip_shift else x
            y = self.drop_path(y) + shortcut
        return y

    def after_norm(self, index: int, y: Tensor) -> Tensor:
        """What follows conv `index` and its norm: nothing, the stage is linear. A subclass may put
        an activation back for a while (ds.train.anneal blends the removed ones out during training)."""
        return y

    def affines(self) -> list[Affine]:
        """Each conv with its norm folded, with the padding the original block gave it."""
        affines = [fold_batchnorm(conv, norm if isinstance(norm, nn.BatchNorm2d) else None)
                   for conv, norm in zip(self.convs, self.norms)]
        for affine, padding in zip(affines, self.own_paddings):
            affine.padding = padding
        return affines

    def folded(self) -> LinearStage:
        """The same stage with BatchNorm folded into each conv (paddings kept as they are)."""
        convs = [to_conv(affine, conv.padding[0], conv)
                 for affine, conv in zip(self.affines(), self.convs)]
        return LinearStage(convs, [nn.Identity() for _ in convs], self.own_paddings,
                           self.skip_shift if self.has_skip else None, mergeable=self.mergeable)

    def merged_affine(self) -> Affine:
        """The whole stage, skip included, as one Affine."""
        affine = compose_all(self.affines())
        return add_identity(affine) if self.has_skip else affine


class LinearRun(nn.Module):
    """Consecutive blocks without activations, with all zero padding on the first conv.

    `final_act` (the paper's setting) is applied after the last stage's residual add.
    """

    def __init__(self, stages: list[LinearStage], final_act: nn.Module | None = None,
                 sources: tuple[str, ...] = ()):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.final_act = final_act if final_act is not None else nn.Identity()
        self.sources = tuple(sources)  # module paths of the blocks this run replaced

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.final_act(x)

    @property
    def in_channels(self) -> int:
        return self.stages[0].convs[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.stages[-1].convs[-1].out_channels

    def merged(self, merge_depthwise_separable: bool = False) -> nn.Module:
        """An equivalent module of plain convs (BN folded, mergeable stages fused into one conv)."""
        pieces: list[Affine | LinearStage] = []
        for stage in self.stages:
            if stage.mergeable or merge_depthwise_separable:
                affine = stage.merged_affine()
                if pieces and isinstance(pieces[-1], Affine):
                    affine = compose_all([pieces[-1], affine])
                    pieces[-1] = affine
                else:
                    pieces.append(affine)
            else:
                pieces.append(stage.folded())
        run_padding = self.stages[0].convs[0].padding[0]
        like = self.stages[0].convs[0]
        stages = [
            LinearStage([to_conv(piece, run_padding if index == 0 else 0, like)], [nn.Identity()],
                        (piece.padding,))
            if isinstance(piece, Affine) else piece
            for index, piece in enumerate(pieces)
        ]
        final_act = copy.deepcopy(self.final_act)
        if len(stages) == 1 and not stages[0].has_skip:
            layers = list(stages[0].convs)
            if not isinstance(final_act, nn.Identity):
                layers.append(final_act)
            return nn.Sequential(*layers)
        return LinearRun(stages, final_act, self.sources)
