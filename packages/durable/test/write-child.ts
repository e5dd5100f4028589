// Writes argv[2] durably with the content argv[3] (run under strace by durable.test.ts). With argv[4]
// `publish`, the file is first written plainly under a temporary name and then put in place by publishFile.
import { writeFile } from 'node:fs/promises';
import { publishFile, writeFileDurable } from '../src/index.ts';

const [, , path, content, how] = process.argv;
if (how === 'publish') {
  const temp = `${path!}.staged`;
  await writeFile(temp, content!);
  await publishFile(temp, path!);
} else await writeFileDurable(path!, content!);
