// Writes argv[2] durably with the content argv[3] (run under strace by durable.test.ts).
import { writeFileDurable } from '../src/index.ts';

await writeFileDurable(process.argv[2]!, process.argv[3]!);
