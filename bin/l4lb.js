#!/usr/bin/env node
// Entry point: the compiled CLI (built by `npm ci` through the prepare script).
import { main } from '../dist/cli.js';

main(process.argv);
