// What pnpm changes in a package's manifest as it packs or publishes it (pnpm >= 10.28): development-only
// fields out — the private test kit must not appear in a published package, and no script runs for users.
module.exports = {
  hooks: {
    beforePacking(pkg) {
      delete pkg.devDependencies;
      delete pkg.scripts;
      return pkg;
    },
  },
};
