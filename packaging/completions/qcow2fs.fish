# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_qcow2fs_global_optspecs
    string join \n h/help V/version
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

complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -s V -l version -d 'Print version'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "info" -d 'Report an image\'s header, snapshots, table figures and consistency'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "check" -d 'Check an image\'s consistency; exit 0 clean, 1 check not possible, 2 corruptions, 3 leaks only (as qemu-img check)'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "mount" -d 'Mount IMAGE_DIR read-only at MOUNTPOINT, every qcow2 image a folder'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "export" -d 'Write an image\'s chain of qcow2 layers (the files of chain/ or forward/, chain.json and SHA256SUMS) into OUTDIR, without a mount; every file is on disk when it returns'
complete -c qcow2fs -n "__fish_qcow2fs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand info" -l output -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON'"
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand info" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand check" -l output -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON'"
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -s o -d 'Mount options, comma-separated: allow_other, allow_root, default_permissions, fsname=NAME, subtype=NAME (ro is implied)' -r
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l cache-size -d 'Cache budget for L2 tables, refcount blocks and decompressed clusters (bytes, or with a K, M or G suffix)' -r
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l threads -d 'Threads serving requests' -r
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l daemon -d 'Detach once the mount is ready'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l allow-outside-backing -d 'Follow backing files that lie outside IMAGE_DIR'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -l force-share -d 'Serve active.raw and the layers built on the active state even of images a running VM has open for writing (refused with EBUSY otherwise; snapshot views are always served)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand mount" -s h -l help -d 'Print help'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l reverse -d 'Reverse chain, as in chain/ (the default)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l forward -d 'Forward chain, as in forward/'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -l force -d 'Overwrite existing files'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand export" -s h -l help -d 'Print help'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "info" -d 'Report an image\'s header, snapshots, table figures and consistency'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "check" -d 'Check an image\'s consistency; exit 0 clean, 1 check not possible, 2 corruptions, 3 leaks only (as qemu-img check)'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "mount" -d 'Mount IMAGE_DIR read-only at MOUNTPOINT, every qcow2 image a folder'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "export" -d 'Write an image\'s chain of qcow2 layers (the files of chain/ or forward/, chain.json and SHA256SUMS) into OUTDIR, without a mount; every file is on disk when it returns'
complete -c qcow2fs -n "__fish_qcow2fs_using_subcommand help; and not __fish_seen_subcommand_from info check mount export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
