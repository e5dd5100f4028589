// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', '**/coverage/**'] },
  js.configs.recommended,
  {
    files: ['**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly' } },
  },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    // STYLE.md 2 and 7: byte-level access lives in @lcow/binary and format/ folders; errors carry a code.
    files: ['packages/*/src/**/*.ts'],
    ignores: ['packages/binary/src/**', 'packages/*/src/**/format/**', 'packages/*/src/**/*.test.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "NewExpression[callee.name='DataView']", message: 'Declare the layout in a format/ struct table.' },
        {
          selector: 'CallExpression[callee.property.name=/^(get|set)(Uint|Int|BigUint|BigInt|Float)(8|16|32|64)$/]',
          message: 'Declare the layout in a format/ struct table.',
        },
        {
          // Buffer's own accessors spell offsets by hand just the same (writeUInt32LE(1, 4)).
          selector:
            'CallExpression[callee.property.name=/^(read|write)(U?Int(8|16|32)|BigU?Int64|Float|Double|U?IntLE|U?IntBE)(LE|BE)?$/]',
          message: 'Declare the layout in a format/ struct table.',
        },
        { selector: "NewExpression[callee.name='Error']", message: "Throw the package's error class with a code." },
      ],
    },
  },
  {
    // format/ is pure data: it may import only @lcow/binary and its siblings.
    files: ['packages/*/src/**/format/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['node:*', '../*', '!../format/*'], message: 'format/ holds layouts only.' }] },
      ],
    },
  },
);
