# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_qcow2fs_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_qcow2fs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_qcow2fs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_qcow2fs_using_subcommand
    set -l cmd (__fish_qcow2fs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -s v -l verbose -d 'Log more: -v adds what is done (info), -vv debugging detail, -vvv everything (the default is warnings and errors; RUST_LOG applies when neither -v nor -q is given)'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -s q -l quiet -d 'Log errors only'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -s V -l version -d 'Print version'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "info" -d 'Report an image\'s header, snapshots, table figures and consistency'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "check" -d 'Check an image\'s consistency; exit 0 clean, 1 check not possible (or a usage error), 2 corruptions, 3 leaks only (as qemu-img check)'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "mount" -d 'Mount IMAGE_DIR read-only at MOUNTPOINT, every qcow2 image a folder'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "export" -d 'Write an image\'s chain of qcow2 layers (the files of chain/ or forward/, chain.json and SHA256SUMS) into OUTDIR, without a mount; every file is on disk when it returns'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand info" -l output -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON'"
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand info" -s v -l verbose -d 'Log more: -v adds what is done (info), -vv debugging detail, -vvv everything (the default is warnings and errors; RUST_LOG applies when neither -v nor -q is given)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand info" -s q -l quiet -d 'Log errors only'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand info" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand check" -l output -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON'"
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand check" -s v -l verbose -d 'Log more: -v adds what is done (info), -vv debugging detail, -vvv everything (the default is warnings and errors; RUST_LOG applies when neither -v nor -q is given)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand check" -s q -l quiet -d 'Log errors only'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -s o -l options -d 'Mount options, comma-separated: allow_other, allow_root, default_permissions, nonempty, fsname=NAME, subtype=NAME (ro is implied; an empty list is allowed)' -r
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l log-file -d 'Append the log to PATH (instead of standard error, or of syslog with --daemon)' -r -F
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l cache-size -d 'Cache budget for L2 tables, refcount blocks and decompressed clusters (bytes, or with a K, M or G suffix; more than 0)' -r
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l threads -d 'Threads serving requests (1 to 1024)' -r
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l daemon -d 'Detach once the mount is ready; the log then goes to syslog, or to --log-file'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l allow-outside-backing -d 'Follow backing files that lie outside IMAGE_DIR'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l force-share -d 'Serve active.raw and the layers built on the active state even of images a running VM has open for writing (refused with EBUSY otherwise; snapshot views are always served)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -s v -l verbose -d 'Log more: -v adds what is done (info), -vv debugging detail, -vvv everything (the default is warnings and errors; RUST_LOG applies when neither -v nor -q is given)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -s q -l quiet -d 'Log errors only'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -s h -l help -d 'Print help'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l reverse -d 'Reverse chain, as in chain/ (the default)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l forward -d 'Forward chain, as in forward/'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l force -d 'Write into an OUTDIR that is not empty: the files of the chain it holds are replaced, and those the new chain does not have are removed (other files are left alone)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l force-share -d 'Write the live state too when another program (a running VM) holds the image open for writing; otherwise only its snapshots are written, which do not change under the reader'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -s v -l verbose -d 'Log more: -v adds what is done (info), -vv debugging detail, -vvv everything (the default is warnings and errors; RUST_LOG applies when neither -v nor -q is given)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -s q -l quiet -d 'Log errors only'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -s h -l help -d 'Print help'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "info" -d 'Report an image\'s header, snapshots, table figures and consistency'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "check" -d 'Check an image\'s consistency; exit 0 clean, 1 check not possible (or a usage error), 2 corruptions, 3 leaks only (as qemu-img check)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "mount" -d 'Mount IMAGE_DIR read-only at MOUNTPOINT, every qcow2 image a folder'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "export" -d 'Write an image\'s chain of qcow2 layers (the files of chain/ or forward/, chain.json and SHA256SUMS) into OUTDIR, without a mount; every file is on disk when it returns'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
