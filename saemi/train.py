"""Training the U-Net from scratch on EMPS-style data (``images/`` + ``segmaps/``).

Decisions, written down once:

* **Targets**: three classes, background / interior / boundary. The boundary is
  a ring ``boundary_width`` pixels wide inside every particle (at the network's
  scale), so touching particles are separated by boundary pixels and their
  interiors make clean watershed markers.
* **Scale**: every image is first resized by ``input_scale`` (0.5) and the network
  trains and predicts at that scale; random rescaling (x0.7 to x1.4) on top
  teaches some scale tolerance. This quarters the work per image and doubles
  the receptive field in original pixels, which large particles need. (With the
  v2 recipe's scale augmentation, below, the random rescaling instead spans the
  whole size-normalisation band and beyond.)
* **Recipe** (:class:`saemi.augment.Recipe`, issue 20): intensity augmentation,
  scale augmentation, copy-paste clusters of real particles and hard-image
  sampling, each behind one ``saemi train`` flag and recorded on the card;
  :func:`recipe_crop` cuts the v2 crops, :func:`augment_crop` v1's.
* **Loop**: a plain PyTorch loop (AdamW, one-cycle schedule, bf16 autocast and
  channels-last on the CPU) around the fastai ``DynamicUnet`` from
  :mod:`saemi.model`; the schedule can follow a wall-clock budget
  (``--minutes``) so a run always finishes annealed inside a session.
* **Resumable**: a checkpoint (model, optimiser, step, elapsed time) goes to
  ``checkpoints/`` every few minutes; ``--resume`` continues it.
* **Split**: seeded, written to ``<out>/split.json``; made of the ``--data``
  images only. The held-out images are then divided into ``val`` and ``test``
  (:func:`saemi.dataset.carve_test`, by particle size): validation, and so the
  choice of the saved checkpoint, uses ``val`` alone; ``test`` is never read.
* **Extra folders** (``--extra DIR``, a lab's corrected images): training
  images only, never validation; each drawn ``--extra-weight`` (4) times as
  often as a ``--data`` image; listed on the card (see :func:`train`).
"""

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .instances import SplitSettings, split_touching
from .metrics import score_image
from .card import CARD_FILE, DEFAULT_CARD, WEIGHTS_FILE
from .dataset import (DatasetError, carve_test, class_targets, list_pairs, load_dataset,  # noqa: F401  (the loaders train reads with)
                      read_label_image)
from .model import Segmenter, build_unet, choose_device, standardize


def make_split(names, val_fraction=0.15, seed=0):
    """A seeded train/validation split of image names."""
    rng = random.Random(seed)
    shuffled = sorted(names)
    rng.shuffle(shuffled)
    n_val = max(1, round(len(names) * val_fraction))
    return {"seed": seed, "val_fraction": val_fraction,
            "train": sorted(shuffled[n_val:]), "val": sorted(shuffled[:n_val])}


def augment_crop(item, crop, rng):
    """One randomly scaled, flipped, rotated and photometrically jittered crop.

    Returns
    -------
    x : ndarray float32 (3, crop, crop), standardised
    y : ndarray int64 (crop, crop), class targets
    """
    img, tgt = item["image"], item["target"]
    h, w = tgt.shape
    s = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    side = int(round(crop / s))
    if h < side or w < side:  # small image: pad by reflection
        ph, pw = max(0, side - h), max(0, side - w)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        tgt = cv2.copyMakeBorder(tgt, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        h, w = tgt.shape
    y0, x0 = rng.randint(0, h - side), rng.randint(0, w - side)
    im = cv2.resize(img[y0:y0 + side, x0:x0 + side], (crop, crop), interpolation=cv2.INTER_LINEAR)
    tg = cv2.resize(tgt[y0:y0 + side, x0:x0 + side], (crop, crop), interpolation=cv2.INTER_NEAREST)
    k = rng.randint(0, 3)
    im, tg = np.rot90(im, k), np.rot90(tg, k)
    if rng.random() < 0.5:
        im, tg = im[:, ::-1], tg[:, ::-1]
    return standardize(_v1_photometric(im, rng)), np.ascontiguousarray(tg).astype(np.int64)


def _v1_photometric(im, rng):
    """The v1 recipe's grey conversion and photometric jitter of a uint8 RGB crop (``rng``: :class:`random.Random`)."""
    im = im.astype(np.float32) / 255.0
    if rng.random() < 0.5:  # most micrographs are grey; colour ones must not matter
        im = np.repeat(im.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.3:  # particles can be bright on dark or dark on bright
        im = 1.0 - im
    im = np.clip(im, 0, 1) ** math.exp(rng.uniform(-0.4, 0.4))
    im = im * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2)
    if rng.random() < 0.2:
        im = cv2.GaussianBlur(im, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        im = im + np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(0.01, 0.08), im.shape).astype(np.float32)
    return np.clip(im * 255.0, 0, 255).astype(np.uint8)


def item_diameter(item):
    """An item's typical particle diameter at the network's scale (px; NaN without particles), cached on the item.

    :func:`saemi.size.typical_diameter` (the area-weighted median particle), the
    estimate size-normalised inference brings into its band, so that the scale
    augmentation covers the band in the same terms.
    """
    if "diameter" not in item:
        from .size import typical_diameter

        item["diameter"] = typical_diameter(item["labels"])
    return item["diameter"]


def recipe_crop(item, crop, rng, recipe, bank=(), boundary_width=2, band=None, return_labels=False):
    """One training crop of the v2 recipe (:class:`saemi.augment.Recipe`).

    Scale (:func:`saemi.augment.draw_scale` with ``recipe.scale_aug``, else the
    v1 jitter), crop (:func:`saemi.augment.scaled_crop`), with probability
    ``recipe.copy_paste`` a pasted cluster (:func:`saemi.augment.copy_paste`),
    rotation and mirroring; the class targets are then made from the crop's
    instance labels (:func:`saemi.dataset.class_targets`: a ``boundary_width``
    ring at the network whatever the scale); last the grey conversion and the
    intensity augmentation (:func:`saemi.augment.intensity_augment`, else the v1
    jitter), on the image only. Geometry, pasting and intensity draw from three
    independent generators seeded from ``rng``, so switching one of them leaves
    the others' draws -- and with intensity, the labels -- as they were.

    Returns
    -------
    x : ndarray float32 (3, crop, crop), standardised
    y : ndarray int64 (crop, crop), class targets
    labels : ndarray int32 (crop, crop)
        With ``return_labels``: the crop's instance labels, ``y``'s source.
    """
    from . import augment as A

    geo, pasting, photo = np.random.default_rng(rng.getrandbits(64)).spawn(3)
    d = item_diameter(item)
    s = A.draw_scale(d, geo, band) if recipe.scale_aug else A.draw_scale(float("nan"), geo)
    im, lab, achieved = A.scaled_crop(item["image"], item["labels"], crop, s, geo)
    if recipe.copy_paste > 0 and len(bank) and pasting.random() < recipe.copy_paste:
        im, lab, _ = A.copy_paste(im, lab, bank, pasting, diameter=(d * achieved if d > 0 else None),
                                  source=item.get("name"))
    k = int(geo.integers(4))
    im, lab = np.rot90(im, k), np.rot90(lab, k)
    if geo.random() < 0.5:
        im, lab = im[:, ::-1], lab[:, ::-1]
    tg = class_targets(np.ascontiguousarray(lab), boundary_width)
    if recipe.intensity_aug:
        if photo.random() < 0.5:  # most micrographs are grey; colour ones must not matter
            im = np.repeat(np.rint(im.mean(axis=2, keepdims=True)).astype(np.uint8), 3, axis=2)
        im = A.intensity_augment(np.ascontiguousarray(im), photo)
    else:
        im = _v1_photometric(im, random.Random(int(photo.integers(2**63))))
    out = standardize(np.ascontiguousarray(im)), tg.astype(np.int64)
    return (*out, np.ascontiguousarray(lab)) if return_labels else out


def make_batch(items, batch_size, crop, rng, weights=None, recipe=None, bank=(), boundary_width=2,
               return_picks=False):
    """A batch of augmented crops, each from an image drawn at random (in proportion to ``weights``).

    ``recipe`` (:class:`saemi.augment.Recipe`) with any crop augmentation on
    cuts the crops with :func:`recipe_crop` (``bank``: the particles to paste);
    None, or all of them off, with :func:`augment_crop`, v1's crops draw for
    draw. ``return_picks`` adds the list of the image index of each crop.
    """
    if recipe is not None and recipe.crop_path():
        def cut(item):
            return recipe_crop(item, crop, rng, recipe, bank, boundary_width)
    else:
        def cut(item):
            return augment_crop(item, crop, rng)
    crops, picks = [], []
    if weights is None:  # uniform: the draws of every run before extra folders existed
        for _ in range(batch_size):
            picks.append(rng.randrange(len(items)))
            crops.append(cut(items[picks[-1]]))
    else:
        picks = rng.choices(range(len(items)), weights=weights, k=batch_size)
        crops = [cut(items[i]) for i in picks]
    xs, ys = zip(*crops)
    batch = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
    return (*batch, picks) if return_picks else batch


#: How many times as often as a ``--data`` image each ``--extra`` image is drawn for a training crop.
DEFAULT_EXTRA_WEIGHT = 4.0


def extra_share(n_data, n_extra, weight):
    """The expected fraction of training crops cut from the extra images."""
    total = n_data + weight * n_extra
    return weight * n_extra / total if total else 0.0


def load_extra(extra_dirs, data_dir, scale=0.5, boundary_width=2):
    """Check and load every extra folder (before the main data, so that a bad folder fails at once).

    Returns
    -------
    items : list of dict
        Training items (:func:`saemi.dataset.load_dataset`) of all folders.
    folders : list of dict
        ``{"folder", "images", "names"}`` per folder, for the model card.

    Raises
    ------
    DatasetError
        A folder that is missing, malformed (see :func:`saemi.dataset.list_pairs`
        with ``strict``), given twice, or the ``--data`` folder itself.
    """
    items, folders, seen = [], [], {}
    data_real = Path(data_dir).resolve()
    for d in extra_dirs:
        d = Path(d)
        names = list_pairs(d, strict=True)
        real = d.resolve()
        if real == data_real:
            raise DatasetError(f"--extra {d} is the --data folder; its images are already training "
                               "(and validation) images")
        if real in seen:
            raise DatasetError(f"--extra {d} is given twice (also as {seen[real]})")
        seen[real] = d
        items += load_dataset(d, names, scale, boundary_width)
        folders.append({"folder": str(d), "images": len(names), "names": names})
    return items, folders


def _check_not_validation(extra_items, val_items, log=print, test_names=()):
    """Refuse an extra image that is a validation or test image (same name, same pixels): it would be trained on.

    An extra image that only shares a validation image's name is kept, with a warning.
    """
    val = {it["name"]: it for it in val_items}
    for it in extra_items:
        twin = val.get(it["name"])
        if twin is None:
            continue
        if twin["image"].shape == it["image"].shape and np.array_equal(twin["image"], it["image"]):
            kind = "test" if it["name"] in set(test_names) else "validation"
            raise DatasetError(f"the extra image {it['name']} is the {kind} image {it['name']} of --data; "
                               f"{kind} images must not be trained on (leave it out of the extra folder)")
        log(f"warning: the extra image {it['name']} has the name of a held-out image of --data but other "
            "pixels; it is used for training")


def seg_loss(logits, target, class_weights):
    """Cross-entropy plus soft Dice on the particle (non-background) mask."""
    ce = F.cross_entropy(logits, target, weight=class_weights)
    prob = torch.softmax(logits, dim=1)
    fg_p = 1.0 - prob[:, 0]
    fg_t = (target > 0).float()
    inter = (fg_p * fg_t).sum()
    dice = 1.0 - (2 * inter + 1.0) / (fg_p.sum() + fg_t.sum() + 1.0)
    return ce + dice


def lr_at(progress, peak, warmup=0.05, final_div=100.0):
    """One-cycle learning rate for ``progress`` in [0, 1]: linear warm-up, cosine down."""
    if progress < warmup:
        return peak * (0.04 + 0.96 * progress / warmup)
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return peak / final_div + (peak - peak / final_div) * 0.5 * (1 + math.cos(math.pi * t))


def validate(net, items, device, precision, settings, tile=512):
    """Full-image scores at the network's scale: mean AP@0.5, Dice, diameter error."""
    net.eval()
    # the inference path of the shipped model, on the network being trained
    segmenter = Segmenter(net=net, card={**DEFAULT_CARD, "tile_size": tile, "tile_overlap": 64}, device=device,
                          precision=precision)
    scores = []
    for item in items:
        prob = segmenter.predict_resized(item["image"])
        scores.append(score_image(item["labels"], split_touching(prob, settings)))
    net.train()
    out = {k: float(np.nanmean([s[k] for s in scores])) for k in ("ap50", "f1", "dice")}
    errs = np.array([s["mean_d_rel_err"] for s in scores], float)
    out["d_err_median"] = float(np.median(errs[np.isfinite(errs)])) if np.isfinite(errs).any() else float("nan")
    return out


def save_weights(net, out_dir, card):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(state, out_dir / WEIGHTS_FILE)
    with open(out_dir / CARD_FILE, "w") as f:
        json.dump(card, f, indent=2)


def train(data_dir, out_dir, epochs=60, crop=192, batch_size=8, lr=2e-3, device="auto",
          val_fraction=0.15, seed=0, minutes=None, val_every=4, checkpoint_dir="checkpoints",
          resume=False, scale=0.5, boundary_width=2, limit_images=None, precision="auto", log=print,
          extra_dirs=(), extra_weight=DEFAULT_EXTRA_WEIGHT, recipe=None):
    """Train the U-Net and write the best weights (by validation AP) to ``out_dir``.

    The augmentation and sampling recipe is ``recipe`` (a
    :class:`saemi.augment.Recipe`; default ``Recipe()``, the v2 recipe: intensity
    and scale augmentation, copy-paste clusters in half the crops, hard-image
    sampling; :data:`saemi.augment.V1_RECIPE` is the shipped weights' recipe).
    With copy-paste on, the particles pasted are cut from the training images
    (``--extra`` ones included), never from validation or test images. With
    hard sampling on, each training image keeps a running loss of its crops
    (:func:`saemi.augment.update_losses`) and is drawn in proportion to its
    ``--extra-weight`` (1 for a ``data_dir`` image) times
    :func:`saemi.augment.hard_factors` of those losses. The checkpoint holds the
    recipe and the running losses, so ``resume`` continues both; resuming with
    another recipe is logged and the card records the checkpoint's as
    ``training.recipe_before_resume``. The card's ``training.recipe`` is
    :meth:`saemi.augment.Recipe.card`.

    Extra training folders (``extra_dirs``; ``saemi train --extra DIR``, repeatable)
    are a lab's own corrected images, e.g. the pairs the page downloads:

    * **Training only.** Their images join the training set; the seeded
      train/validation split is made of ``data_dir``'s images alone, so
      ``split.json`` is the same file with or without extras and the weights are
      still chosen on the shared validation images.
    * **Drawn more often.** Each extra image is picked for a training crop
      ``extra_weight`` times as often as a ``data_dir`` image (default
      :data:`DEFAULT_EXTRA_WEIGHT`, 4): a few corrected images then make a
      noticeable share of the crops without swamping the shared set (2 extra
      images beside EMPS's 311 training images: 2.5 % of the crops; 20: 20 %;
      ``extra_weight=1`` treats them like any other image). The share is logged.
    * **Checked first.** Every folder is checked and loaded before the main data:
      a missing folder, no ``images/`` or ``segmaps/``, no images, an image without
      its mask (or a mask without its image: a name mismatch is refused rather
      than skipped, so that no corrected image is silently left out), two images
      with one name, a mask that is not an integer label image, or one whose
      shape differs from its image's raise :class:`~saemi.dataset.DatasetError`
      naming the file. The same rules hold for ``data_dir``.
    * **On the card.** ``training.extra`` lists each folder (as given), its image
      count and names; ``training.extra_weight`` and ``extra_crop_share`` the
      sampling.

    A lab with no shared data trains on its own folder alone by giving it as
    ``data_dir``: it is then split into training and validation images like any
    data set (with ``val_fraction``; at least one validation image).

    Parameters
    ----------
    data_dir : path
        EMPS layout: ``images/<id>.png`` (or ``.tif``/``.tiff``) and 16-bit ``segmaps/<id>.png``
        (see :mod:`saemi.dataset`). Split into training and validation images.
    extra_dirs : sequence of paths
        Further folders of the same layout, for training only (above).
    extra_weight : float
        How many times as often as a ``data_dir`` image each extra image is drawn (> 0).
    out_dir : path
        Receives ``saemi_unet_resnet18.pt`` (fp16 state dict), ``model_card.json``
        and ``split.json``.
    epochs : int
        One epoch is ``len(train images) / batch_size`` steps of random crops.
    crop : int
        Crop side in pixels at the network's scale.
    minutes : float, optional
        Wall-clock budget: the schedule anneals by then and training stops.
    limit_images : int, optional
        Use only this many images (for quick tests).

    Returns
    -------
    dict
        The model card written (with the validation metrics of the saved weights).
    """
    from . import augment as A

    recipe = A.Recipe() if recipe is None else recipe
    started = time.time()
    if not extra_weight > 0:
        raise DatasetError(f"the extra weight must be above 0, got {extra_weight}")
    extra_items, extra_folders = load_extra(extra_dirs, data_dir, scale, boundary_width)
    names = list_pairs(data_dir, strict=True)
    dev = choose_device(device)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if limit_images:
        names = names[:limit_images]
    split = carve_test(make_split(names, val_fraction, seed), data_dir)  # test: never loaded for training
    train_items = load_dataset(data_dir, split["train"], scale, boundary_width)
    val_items = load_dataset(data_dir, split["val"], scale, boundary_width)
    held_out = val_items + (load_dataset(data_dir, split["test"], scale, boundary_width)
                            if extra_items and split["test"] else [])
    _check_not_validation(extra_items, held_out, log, test_names=split["test"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "split.json", "w") as f:
        json.dump(split, f, indent=1)
    log(f"data: {len(train_items)} training and {len(val_items)} validation images ({len(split['test'])} test "
        f"images held out), loaded in {time.time() - started:.0f} s")
    sample_weights, share = None, 0.0
    if extra_items:
        share = extra_share(len(train_items), len(extra_items), extra_weight)
        sample_weights = [1.0] * len(train_items) + [float(extra_weight)] * len(extra_items)
        log(f"extra: {len(extra_items)} training images from " + ", ".join(
            f"{f['folder']} ({f['images']})" for f in extra_folders)
            + f", each drawn x{extra_weight:g}: {100 * share:.1f} % of the crops")
    train_items = train_items + extra_items
    band = A.scale_band()
    bank = A.particle_bank(train_items, np.random.default_rng(seed)) if recipe.copy_paste > 0 else []
    if recipe.copy_paste > 0:
        log(f"copy-paste: {len(bank)} particles from {len(train_items)} training images, pasted into "
            f"{100 * recipe.copy_paste:.0f} % of the crops")
    image_names = [it["name"] for it in train_items]
    image_loss = np.full(len(train_items), np.nan)
    recipe_before = None

    if precision == "auto":
        precision = "bf16" if dev.type == "cpu" else "fp32"
    net = build_unet(3).to(dev)
    if dev.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(train_items) // batch_size)
    total_steps = epochs * steps_per_epoch
    step, elapsed_before, best = 0, 0.0, {"ap50": -1.0}
    ckpt = Path(checkpoint_dir) / "train_state.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        best = {"ap50": float(state["best_ap50"])}
        rng.seed(seed + step)
        log(f"resumed from {ckpt} at step {step} ({elapsed_before / 60:.1f} min done)")
        before = A.recipe_from_card(state.get("recipe"))
        if before != recipe:
            recipe_before = before
            log(f"note: the checkpoint was trained with the recipe {before}; continuing with {recipe}")
        if state.get("image_names") == image_names:
            image_loss = np.asarray(state["image_loss"], dtype=np.float64)
    weights = torch.tensor(DEFAULT_CARD["loss_class_weights"], device=dev)
    settings = SplitSettings(**DEFAULT_CARD["postprocess"])
    t0 = time.time()
    last_ckpt = time.time()
    from tqdm import tqdm

    def progress():
        p = step / total_steps
        if minutes:
            p = max(p, (elapsed_before + time.time() - t0) / (60 * minutes))
        return p

    def sampling_state():
        return {"recipe": asdict(recipe), "image_names": image_names,
                "image_loss": [float(v) for v in image_loss]}

    net.train()
    epoch = step // steps_per_epoch
    while progress() < 1.0:
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False, mininterval=10)
        for _ in bar:
            if progress() >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(progress(), lr)
            draw = sample_weights
            if recipe.hard_sampling:
                base = np.ones(len(train_items)) if sample_weights is None else np.asarray(sample_weights)
                draw = [float(v) for v in base * A.hard_factors(image_loss)]
            x, y, picks = make_batch(train_items, batch_size, crop, rng, draw, recipe=recipe, bank=bank,
                                     boundary_width=boundary_width, return_picks=True)
            x, y = x.to(dev), y.to(dev)
            if dev.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = net(x)
            loss = seg_loss(logits.float(), y, weights)
            if recipe.hard_sampling:
                with torch.no_grad():
                    per_crop = F.cross_entropy(logits.float(), y, weight=weights, reduction="none").mean(dim=(1, 2))
                image_loss = A.update_losses(image_loss, picks, per_crop.cpu().numpy())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
            if time.time() - last_ckpt > 300:
                _checkpoint(ckpt, net, opt, step, elapsed_before + time.time() - t0, best["ap50"],
                            sampling_state())
                last_ckpt = time.time()
        epoch += 1
        elapsed = elapsed_before + time.time() - t0
        msg = (f"epoch {epoch} step {step} loss {np.mean(losses) if losses else float('nan'):.4f} "
               f"lr {opt.param_groups[0]['lr']:.2e} elapsed {elapsed / 60:.1f} min")
        if epoch % val_every == 0 or progress() >= 1.0:
            metrics = validate(net, val_items, dev, precision, settings)
            msg += " | val " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            if metrics["ap50"] > best["ap50"]:
                best = {**metrics, "epoch": epoch, "step": step}
                card = _card(best, split, epochs, step, elapsed, dev, crop, batch_size, scale, boundary_width, data_dir, precision)
                if extra_folders:
                    card["training"].update(extra=extra_folders, extra_weight=float(extra_weight),
                                            extra_crop_share=round(share, 4))
                card["training"]["recipe"] = recipe.card(band)
                if recipe.copy_paste > 0:
                    card["training"]["copy_paste_bank"] = len(bank)
                if recipe_before is not None:
                    card["training"]["recipe_before_resume"] = recipe_before.card(band)
                save_weights(net, out_dir, card)
                msg += " (saved)"
        log(msg)
        _checkpoint(ckpt, net, opt, step, elapsed_before + time.time() - t0, best["ap50"], sampling_state())
        last_ckpt = time.time()
    return read_json(out_dir / CARD_FILE)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _checkpoint(path, net, opt, step, elapsed, best_ap50, extra=None):
    """Model, optimiser, step, time and best AP; ``extra``: the recipe and the running per-image losses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optim": opt.state_dict(), "step": step,
                "elapsed": elapsed, "best_ap50": best_ap50, **(extra or {})}, tmp)
    tmp.replace(path)


def _card(best, split, epochs, step, elapsed, dev, crop, batch_size, scale, boundary_width, data_dir, precision):
    import platform
    import datetime

    hardware = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        **DEFAULT_CARD,
        "input_scale": scale,
        "boundary_width_at_scale": boundary_width,
        "training": {
            "data": str(Path(data_dir).name), "n_train": len(split["train"]), "n_val": len(split["val"]),
            "n_test": len(split.get("test", [])), "split_file": "split.json", "split_seed": split["seed"], "epochs_planned": epochs,
            "steps": step, "crop": crop, "batch_size": batch_size, "precision": precision,
            "minutes": round(elapsed / 60, 1), "hardware": hardware,
        },
        "validation_at_training_scale": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()},
        "date": datetime.date.today().isoformat(),
    }
