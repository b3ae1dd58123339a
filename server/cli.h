/*
 * cli.h - client-side subcommands of the `pinpool` binary (they use libpinpool).
 */
#ifndef PINPOOL_SRV_CLI_H
#define PINPOOL_SRV_CLI_H

/* `pinpool info [--socket PATH]`: GetPoolInfo as a table.  Returns the exit code. */
int cli_info(int argc, char **argv);
/* `pinpool status [--socket PATH]`: version and options, then the info table. */
int cli_status(int argc, char **argv);

#endif
