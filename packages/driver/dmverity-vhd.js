#!/usr/bin/env -S node --max-semi-space-size=1 --v8-pool-size=1
// `dmverity-vhd`: lcow under the name and command line of hcsshim's tool (same flags, output lines and exit
// statuses), for scripts and `az confcom` that call it by that name. Flags as in bin.js.
import { dmverityVhdMain } from './dist/bin/main.js';

process.exitCode = await dmverityVhdMain(process.argv.slice(2));
