import { createReadStream } from 'node:fs';
import { convert } from './src/index.ts';
const t = Date.now();
const r = await convert(createReadStream(process.argv[2]!, { highWaterMark: 1 << 20 }), process.argv[3]!, {
  convertWhiteouts: true,
  appendVhdFooter: process.argv[3]!.endsWith('.vhd'),
  onWarning: (w) => console.error(w),
});
console.log(r, (Date.now() - t) / 1000, 's');
